import sys

from daemon.cli import main

sys.exit(main(sys.argv[1:]))

"""Which folders may be a local-directory agent's root: never the machine's own.

Rules (agents.md "One pipeline, several sources"; issue "local runs a user can point at
a real folder"):

- Refused as a root, with the reason: ``/`` (and a drive root such as ``C:\\``); the
  OS's system trees (``/etc /proc /sys /dev /usr /bin /sbin /lib* /var /boot /opt``,
  ``/System``, ``/Library``, ``C:\\Windows``, ``C:\\Program Files*``,
  ``C:\\ProgramData``); the user's credential folders (``~/.ssh ~/.gnupg ~/.aws
  ~/.azure ~/.kube ~/.docker ~/.password-store ~/.config/gcloud``, the keyrings'
  files ``~/.local/share/keyrings`` and ``~/Library/Keychains``); and Tether's own
  config, state and log folders (``protected``: the daemon passes them).
- A root that *contains* one of the last two (on a path the scan would walk, that is
  with no hidden folder between them), e.g. ``~/.config`` holding ``gcloud``, is
  refused too.
- "In" means the folder itself or anything below it, compared both as given and
  after resolving symlinks (``os.path.realpath``), so a link into ``/etc`` is
  refused like ``/etc``. A folder inside the user's home is never a system tree
  (``/var/home/me`` on some Linux systems), but credential folders there are refused.
- Pure apart from resolving the path; no file is opened.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = ["root_refusal"]

_POSIX_SYSTEM = (
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/var",
    "/boot",
    "/opt",
    "/run",
    "/snap",
    "/System",
    "/Library",
    "/private/etc",
    "/private/var",
)
_HOME_CREDENTIALS = (
    ".ssh",
    ".gnupg",
    ".aws",
    ".azure",
    ".kube",
    ".docker",
    ".password-store",
    os.path.join(".config", "gcloud"),
    os.path.join(".local", "share", "keyrings"),
    os.path.join("Library", "Keychains"),
)


def _norm(path: str) -> str:
    return os.path.normcase(os.path.normpath(path))


def _inside(path: str, tree: str) -> bool:
    path, tree = _norm(path), _norm(tree)
    return path == tree or path.startswith(tree.rstrip(os.sep) + os.sep)


def _windows_system() -> list[str]:
    drive = os.environ.get("SystemDrive", "C:") + os.sep
    trees = [
        os.environ.get("SystemRoot", os.path.join(drive, "Windows")),
        os.environ.get("ProgramData", os.path.join(drive, "ProgramData")),
    ]
    for var in ("ProgramFiles", "ProgramFiles(x86)", "ProgramW6432"):
        if os.environ.get(var):
            trees.append(os.environ[var])
    trees += [os.path.join(drive, "Program Files"), os.path.join(drive, "Program Files (x86)")]
    return trees


def _visible_below(tree: str, root: str) -> bool:
    """Whether ``tree`` lies below ``root`` on a path the scan would walk (no hidden part)."""
    if not _inside(tree, root) or _norm(tree) == _norm(root):
        return False
    rel = os.path.relpath(tree, root)
    return not any(part.startswith(".") for part in rel.split(os.sep))


def root_refusal(
    path: str, *, home: str | None = None, protected: Sequence[str] = ()
) -> str | None:
    """Why ``path`` may not be a root, or ``None`` when it may."""
    home = os.path.expanduser("~") if home is None else home
    candidates = [os.path.normpath(path)]
    real = os.path.realpath(path)
    if _norm(real) != _norm(candidates[0]):
        candidates.append(real)
    credentials = [os.path.join(home, name) for name in _HOME_CREDENTIALS]
    system = _windows_system() if os.name == "nt" else list(_POSIX_SYSTEM)
    for where in candidates:
        via = "" if where == candidates[0] else f" (it resolves to {where})"
        if os.path.dirname(where) == where:
            return f"{path} is the root of the file system{via}; choose a folder of your documents"
        for own in protected:
            if _inside(where, own):
                return f"{path} is inside Tether's own folder {own}{via}"
        for folder in credentials:
            if _inside(where, folder):
                return f"{path} is inside {folder}, where credentials live{via}"
        for tree in [*protected, *credentials]:
            if _visible_below(tree, where) and os.path.lexists(tree):
                return f"{path} contains {tree}, which must never be read{via}"
        if _inside(where, home):
            continue  # a user's folder, whatever tree their home is in
        for tree in system:
            if _inside(where, tree):
                return (
                    f"{path} is inside the system folder {tree}{via}; "
                    "choose a folder of your documents"
                )
    return None

"""The arguments the model gives each entity tool, as pydantic models.

Rules:

- Extra fields are *rejected* (a ``dueDate`` typo must not silently drop the due
  date); titles are stripped and must not be empty; dates must be ISO 8601.
- ``assignees`` takes a list of names or one name.
- An update model names its id argument in ``id_field`` and must change something:
  an omitted or ``null`` argument means "leave unchanged".
- The Literals are the model's view of ``protocol.storage``'s enums; an import-time
  check keeps them equal.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from protocol.storage import OrderBy, Priority, ProjectStatus, TaskStatus

from .dates import check_iso

__all__ = [
    "AddCommentArgs",
    "Args",
    "Assignees",
    "CommentIdArgs",
    "CreateNoteArgs",
    "CreateProjectArgs",
    "CreateTaskArgs",
    "CreateTimelineArgs",
    "IsoDate",
    "ListProjectsArgs",
    "ListTasksArgs",
    "NoArgs",
    "NoteIdArgs",
    "ProjectFilterArgs",
    "ProjectIdArgs",
    "TaskIdArgs",
    "Text",
    "TimelineIdArgs",
    "UpdateArgs",
    "UpdateNoteArgs",
    "UpdateProjectArgs",
    "UpdateTaskArgs",
    "UpdateTimelineArgs",
]

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
IsoDate = Annotated[str, AfterValidator(check_iso)]
TaskStatusArg = Literal["todo", "in_progress", "done"]
PriorityArg = Literal["high", "medium", "low"]
ProjectStatusArg = Literal["active", "archived"]
OrderByArg = Literal["dueDate", "priority", "createdAt"]

# The Literals above are the model's view of protocol.storage's enums; keep them equal.
for _lit, _enum in (
    (TaskStatusArg, TaskStatus),
    (PriorityArg, Priority),
    (ProjectStatusArg, ProjectStatus),
    (OrderByArg, OrderBy),
):
    assert set(get_args(_lit)) == {str(m) for m in _enum}, (_lit, _enum)


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Assignees = Annotated[list[Text], BeforeValidator(_one_or_many)]

DATE_HELP = "YYYY-MM-DD or YYYY-MM-DDTHH:MM, local time"


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UpdateArgs(Args):
    """An update must change something; ``id_field`` names the id argument."""

    id_field: ClassVar[str] = "id"

    @model_validator(mode="after")
    def _changes_something(self) -> UpdateArgs:
        others = [n for n in type(self).model_fields if n != self.id_field]
        if all(getattr(self, n) is None for n in others):
            raise ValueError(f"nothing to change: give at least one of {', '.join(others)}")
        return self


class NoArgs(Args):
    pass


class ListTasksArgs(Args):
    project_id: str | None = Field(None, description="Only tasks of this project")
    status: TaskStatusArg | None = Field(None, description="Only tasks with this status")
    search: str | None = Field(None, description="Substring of the title or description")
    order_by: OrderByArg | None = Field(None, description="Sort order (default: createdAt)")


class CreateTaskArgs(Args):
    title: Text = Field(description="Short, actionable title")
    description: str | None = Field(None, description="Details (Markdown)")
    status: TaskStatusArg | None = Field(None, description="Default: todo")
    priority: PriorityArg | None = Field(None, description="Default: medium")
    assignees: Assignees | None = Field(None, description="Names of the people responsible")
    due_date: IsoDate | None = Field(None, description=DATE_HELP)
    project_id: Text | None = Field(None, description="Id of an existing project")


class UpdateTaskArgs(UpdateArgs):
    id_field: ClassVar[str] = "task_id"
    task_id: Text = Field(description="Id of the task")
    title: Text | None = Field(None, description="New title")
    description: str | None = Field(None, description="New description (Markdown)")
    status: TaskStatusArg | None = Field(None, description="New status")
    priority: PriorityArg | None = Field(None, description="New priority")
    assignees: Assignees | None = Field(None, description="New list of assignees (replaces)")
    due_date: IsoDate | None = Field(None, description=DATE_HELP)


class TaskIdArgs(Args):
    task_id: Text = Field(description="Id of the task")


class AddCommentArgs(Args):
    task_id: Text = Field(description="Id of the task")
    content: Text = Field(description="The comment (Markdown)")


class CommentIdArgs(Args):
    comment_id: Text = Field(description="Id of the comment")


class ProjectFilterArgs(Args):
    project_id: str | None = Field(None, description="Only those of this project")


class NoteIdArgs(Args):
    note_id: Text = Field(description="Id of the note")


class CreateNoteArgs(Args):
    title: Text = Field(description="Title of the note")
    content: str = Field(description="Body (Markdown)")
    project_id: Text | None = Field(None, description="Id of an existing project")


class UpdateNoteArgs(UpdateArgs):
    id_field: ClassVar[str] = "note_id"
    note_id: Text = Field(description="Id of the note")
    title: Text | None = Field(None, description="New title")
    content: str | None = Field(None, description="New body (Markdown; replaces the old one)")


class CreateTimelineArgs(Args):
    project_id: Text = Field(description="Id of an existing project (required)")
    title: Text = Field(description="The milestone or event")
    date: IsoDate = Field(description=DATE_HELP)


class UpdateTimelineArgs(UpdateArgs):
    id_field: ClassVar[str] = "timeline_id"
    timeline_id: Text = Field(description="Id of the timeline entry")
    title: Text | None = Field(None, description="New title")
    date: IsoDate | None = Field(None, description=DATE_HELP)


class TimelineIdArgs(Args):
    timeline_id: Text = Field(description="Id of the timeline entry")


class ListProjectsArgs(Args):
    client_id: str | None = Field(None, description="Only projects of this client")
    include_archived: bool | None = Field(None, description="Also archived projects")


class ProjectIdArgs(Args):
    project_id: Text = Field(description="Id of the project")


class CreateProjectArgs(Args):
    name: Text = Field(description="Project name")
    client_id: Text | None = Field(None, description="Id of the client")


class UpdateProjectArgs(UpdateArgs):
    id_field: ClassVar[str] = "project_id"
    project_id: Text = Field(description="Id of the project")
    name: Text | None = Field(None, description="New name")
    status: ProjectStatusArg | None = Field(None, description="active or archived")
    ai_summary: str | None = Field(None, description="Short summary of the project's state")

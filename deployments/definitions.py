"""ceta2vec's deployments, defined once.

`ceta2vec serve` (deployments/serve.py) builds Prefect deployments from these definitions and
serves them from one process; deployments/prefect.yaml says the same for a work pool, and
tests/test_deployments.py checks that the two agree entry by entry (`python -m
deployments.definitions` prints the YAML form of the definitions).

    ingest/watch-folder            cron: new and changed files of a watch folder
    continue-pretraining/nightly   cron, inactive until switched on: K more chunks of a run
    refresh/after-new-data         event: a watch-folder or nightly run completed with new data → embed →
                                   evaluate → report (the event: flows/runtime/completion.py)
    score-new/classify-new         event: an embed run completed with new vectors → new windows scored by each
                                   label's classifier
    report/weekly                  cron: the HTML report, whatever happened
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import timedelta

from pydantic import BaseModel

from flows.runtime.completion import COMPLETED_WITH_NEW_DATA
from schemas.settings import ClassifySettings, IngestSettings, PretrainSettings, RefreshSettings, ReportSettings

TAG = "ceta2vec"
# Runs of deployments carrying this tag start a refresh when they complete. A tag rather than the
# flow name alone, so an ingest run inside `ceta2vec run` or from the command line does not start
# a second, concurrent refresh of the same workspace.
REFRESH_TAG = "refreshes-workspace"
REFRESHED_AFTER = ("ingest", "continue-pretraining")
# Any embed run that embedded new segments (the refresh's, or `ceta2vec embed` against this server)
# has new vectors to score; one that embedded none sends no event, and nothing is scored.
CLASSIFIED_AFTER = ("embed",)
WORK_POOL = "ceta2vec"


@dataclass(frozen=True)
class Schedules:
    """When the scheduled deployments run (cron strings, in `timezone`)."""

    ingest_cron: str = "*/15 * * * *"
    ingest_every_s: float | None = None      # an interval instead of the cron (quick demos, tests)
    pretrain_cron: str = "0 2 * * *"
    pretrain_active: bool = False            # training takes the machine: switched on deliberately
    report_cron: str = "0 6 * * 1"
    timezone: str = "UTC"


@dataclass(frozen=True)
class DeploymentDefinition:
    """One deployment, in the vocabulary of prefect.yaml (schedules, triggers and limits as its entries)."""

    name: str
    entrypoint: str                          # module path: importable from any working directory
    description: str
    parameters: dict
    tags: tuple[str, ...] = (TAG,)
    schedules: tuple[dict, ...] = ()
    triggers: tuple[dict, ...] = ()
    concurrency_limit: dict = field(default_factory=lambda: {"limit": 1, "collision_strategy": "CANCEL_NEW"})

    @property
    def flow_name(self) -> str:
        return self.flow().name

    def flow(self):
        from prefect.flows import load_flow_from_entrypoint

        return load_flow_from_entrypoint(self.entrypoint, use_placeholder_flow=False)

    def yaml_entry(self, work_pool: str = WORK_POOL) -> dict:
        """This deployment as an entry of prefect.yaml's `deployments:` list."""
        return {
            "name": self.name, "entrypoint": self.entrypoint, "description": self.description,
            "tags": list(self.tags), "parameters": self.parameters, "schedules": [dict(s) for s in self.schedules],
            "triggers": [dict(t) for t in self.triggers], "concurrency_limit": dict(self.concurrency_limit),
            "work_pool": {"name": work_pool},
        }

    def to_runner(self):
        """A RunnerDeployment for `serve`: created or updated by name, so restarts never duplicate it."""
        from prefect.client.schemas.objects import ConcurrencyLimitConfig
        from prefect.events import DeploymentEventTrigger

        deployment = self.flow().to_deployment(
            name=self.name, description=self.description, tags=list(self.tags), parameters=self.parameters,
            schedules=[schedule_create(s) for s in self.schedules],
            triggers=[DeploymentEventTrigger.model_validate(t) for t in self.triggers],
            concurrency_limit=ConcurrencyLimitConfig(**self.concurrency_limit),
            paused=False,  # serve pauses its deployments when it stops; starting again resumes them
            entrypoint_type=_module_path(),
        )
        # Prefect names the entrypoint after the function's module; a flow given new hooks with
        # with_options (deployments/served_flows.py) must be loaded from where it was given them.
        deployment.entrypoint = self.entrypoint
        return deployment


def _module_path():
    from prefect.deployments.runner import EntrypointType

    return EntrypointType.MODULE_PATH


def schedule_create(entry: dict):
    """A prefect.yaml schedule entry as the client's DeploymentScheduleCreate (same meaning as `prefect deploy`)."""
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    if "cron" in entry:
        schedule = CronSchedule(cron=entry["cron"], timezone=entry.get("timezone"))
    else:
        schedule = IntervalSchedule(interval=timedelta(seconds=entry["interval"]), timezone=entry.get("timezone"))
    return DeploymentScheduleCreate(schedule=schedule, active=entry.get("active", True), slug=entry["slug"])


def _params(settings: BaseModel) -> dict:
    # Only what was asked: defaults apply when the run starts, and a continued pretraining run
    # keeps the settings it was created with.
    params = settings.model_dump(mode="json", exclude_unset=True)
    if isinstance(settings, IngestSettings) and settings.hop_seconds == settings.segment_seconds:
        params.pop("hop_seconds", None)  # the validator fills it in; left out, it follows segment_seconds
    if isinstance(settings, ClassifySettings) and settings.hop_seconds == settings.window_seconds / 2:
        params.pop("hop_seconds", None)  # likewise: half a window unless given
    return params


def _cron(slug: str, cron: str, timezone: str, active: bool = True) -> dict:
    return {"cron": cron, "timezone": timezone, "active": active, "slug": slug}


def refresh_trigger(flows: tuple[str, ...] = REFRESHED_AFTER, tag: str = REFRESH_TAG) -> dict:
    """prefect.yaml trigger: a flow run of one of `flows`, tagged `tag`, completed with new data.

    It expects the runs' own completion event rather than Prefect's `prefect.flow-run.Completed`,
    which the server holds for 15 minutes for scheduled runs (see flows/runtime/completion.py)."""
    return {
        "type": "event", "name": "refresh after ingest or pretraining", "enabled": True,
        "match": {"prefect.resource.id": "prefect.flow-run.*"},
        "match_related": [
            {"prefect.resource.role": "flow", "prefect.resource.name": list(flows)},
            {"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{tag}"},
        ],
        "expect": [COMPLETED_WITH_NEW_DATA],
        "posture": "Reactive", "threshold": 1, "within": 0,
    }


def classify_trigger(flows: tuple[str, ...] = CLASSIFIED_AFTER) -> dict:
    """prefect.yaml trigger: a flow run of one of `flows` completed with new vectors (whatever started
    it: the embed flow sends the event itself, flows/embed.py), not Prefect's `prefect.flow-run.Completed`,
    which the server can hold for 15 minutes (see flows/runtime/completion.py)."""
    return {
        "type": "event", "name": "score new windows after embed", "enabled": True,
        "match": {"prefect.resource.id": "prefect.flow-run.*"},
        "match_related": [{"prefect.resource.role": "flow", "prefect.resource.name": list(flows)}],
        "expect": [COMPLETED_WITH_NEW_DATA],
        "posture": "Reactive", "threshold": 1, "within": 0,
    }


def definitions(watch: IngestSettings, pretrain: PretrainSettings, refresh: RefreshSettings, report: ReportSettings,
                more_chunks: int = 1, schedules: Schedules = Schedules(),
                classify: ClassifySettings | None = None) -> list[DeploymentDefinition]:
    classify = classify or ClassifySettings(workspace=refresh.workspace)
    if schedules.ingest_every_s is not None:
        ingest_schedule = {"interval": schedules.ingest_every_s, "active": True, "slug": "watch-folder"}
    else:
        ingest_schedule = _cron("watch-folder", schedules.ingest_cron, schedules.timezone)
    return [
        DeploymentDefinition(
            name="watch-folder", entrypoint="deployments.served_flows.ingest",
            description="Ingest the watch folder: files that are new or changed since the last run; "
                        "the others are skipped without being read.",
            parameters={"settings": _params(watch)}, tags=(TAG, REFRESH_TAG), schedules=(ingest_schedule,),
        ),
        DeploymentDefinition(
            name="nightly", entrypoint="deployments.served_flows.continue_pretraining",
            description=f"Continue a pretraining run by {more_chunks} chunk(s). Schedule off until switched on.",
            parameters={"settings": _params(pretrain), "more_chunks": more_chunks}, tags=(TAG, REFRESH_TAG),
            schedules=(_cron("nightly", schedules.pretrain_cron, schedules.timezone, schedules.pretrain_active),),
        ),
        DeploymentDefinition(
            name="after-new-data", entrypoint="flows.refresh.refresh",
            description="Embed what is new, score every label column, rebuild the report; started when a "
                        "watch-folder ingest or a nightly pretraining run completes with new data.",
            parameters={"settings": _params(refresh)}, triggers=(refresh_trigger(),),
            concurrency_limit={"limit": 1, "collision_strategy": "ENQUEUE"},
        ),
        DeploymentDefinition(
            name="classify-new", entrypoint="flows.classify.classify_new",
            description="Score the windows of newly ingested and embedded audio with each label's current "
                        "classifier (nothing is retrained); started when an embed run completes with new vectors.",
            parameters={"settings": _params(classify)}, triggers=(classify_trigger(),),
            concurrency_limit={"limit": 1, "collision_strategy": "ENQUEUE"},
        ),
        DeploymentDefinition(
            name="weekly", entrypoint="flows.report.report",
            description="Rebuild the HTML report of the latest embedded model.",
            parameters={"settings": _params(report)},
            schedules=(_cron("weekly", schedules.report_cron, schedules.timezone),),
        ),
    ]


def matching_workspace(watch: IngestSettings) -> IngestSettings:
    """The watch folder's settings with the dataset settings the workspace already has (sample rate,
    segment length, hop, final segment) wherever they were not given, so a scheduled ingest into an
    existing workspace is not refused for differing from it."""
    from tasks.catalog import recordings
    from tasks.workspace import Workspace, database

    workspace = Workspace.at(watch.workspace)
    if not workspace.db_path.exists():
        return watch
    with database.reading(workspace) as conn:
        stored = recordings.dataset_config(conn)
    asked = _params(watch)
    adopted = {k: v for k, v in stored.items() if k not in asked}
    if "segment_seconds" in asked:
        adopted.pop("hop_seconds", None)  # the hop follows the segment length that was given
    return IngestSettings(**{**asked, **adopted}) if adopted else watch


# prefect.yaml is shared by everyone who deploys: paths come from the environment at deploy time.
YAML_WATCH_FOLDER = "{{ $CETA2VEC_WATCH_FOLDER }}"
YAML_WORKSPACE = "{{ $CETA2VEC_WORKSPACE }}"


def yaml_definitions() -> list[DeploymentDefinition]:
    """The definitions prefect.yaml holds."""
    return definitions(IngestSettings(sources=[YAML_WATCH_FOLDER], workspace=YAML_WORKSPACE),
                       PretrainSettings(workspace=YAML_WORKSPACE), RefreshSettings(workspace=YAML_WORKSPACE),
                       ReportSettings(workspace=YAML_WORKSPACE))


if __name__ == "__main__":
    import yaml

    yaml.safe_dump({"deployments": [d.yaml_entry() for d in yaml_definitions()]}, sys.stdout, sort_keys=False, width=110)

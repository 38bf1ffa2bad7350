"""Operating layer: arrival sensor, schedule, freshness, alerts (against local sinks)."""

from __future__ import annotations

import shutil
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from tests.sinks import smtp_sink, webhook_sink
from workdatahub.alerts import Alert, send_alert
from workdatahub.defs.freshness import due_cron
from workdatahub.samples import write_samples
from workdatahub.settings import Settings


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    from workdatahub.definitions import defs

    return defs


def _arrival(
    defs: dg.Definitions, data_dir: Path, instance: dg.DagsterInstance, cursor: str | None
) -> Any:
    """One tick of the arrival sensor over `data_dir`."""
    from workdatahub.defs.resources import WarehouseResource

    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"warehouse": WarehouseResource(data_dir=str(data_dir))},
        definitions=defs,
    )
    return defs.resolve_sensor_def("workbook_arrival").evaluate_tick(context)


def _arrival_requests(defs: dg.Definitions, data_dir: Path) -> list[dg.RunRequest]:
    with dg.instance_for_test() as instance:
        return list(_arrival(defs, data_dir, instance, None).run_requests or [])


def arrival_tick(
    defs: dg.Definitions, data_dir: Path, instance: dg.DagsterInstance, cursor: str | None
) -> tuple[dict[str, str], str, str | None]:
    """A tick's run key per domain, its cursor, and why it skipped (if it did)."""
    result = _arrival(defs, data_dir, instance, cursor)
    assert result.cursor is not None
    keys = {r.tags["wdh/domain"]: r.run_key for r in result.run_requests or []}
    return keys, result.cursor, result.skip_message


def test_arrival_sensor_keys_runs_by_content(defs: dg.Definitions, tmp_path: Path) -> None:
    samples = write_samples(tmp_path, [date(2024, 2, 1)], rows=60, seed=3)
    (tmp_path / "201912" / "收集数据" / "业务收集").mkdir(parents=True)  # before the partitions
    shutil.copy(
        samples[0].path, tmp_path / "201912" / "收集数据" / "业务收集" / "2019年12月受托业绩.xlsx"
    )
    requests = _arrival_requests(defs, tmp_path)
    by_domain = {r.tags["wdh/domain"]: r for r in requests}
    assert set(by_domain) == {"trustee_performance", "annuity_performance", "annuity_income"}
    assert all(r.partition_key == "2024-02" for r in requests)  # 2019-12 skipped
    annuity = next(s for s in samples if s.domain == "annuity_performance")
    from workdatahub.sources.discovery import sha256_of

    assert (
        by_domain["annuity_performance"].run_key
        == f"annuity_performance:2024-02:{sha256_of(annuity.path)}"
    )
    selected = {k.to_user_string() for k in by_domain["annuity_income"].asset_selection or []}
    assert selected == {
        "raw/annuity_income",
        "staging/stg_annuity_income",
        "marts/fct_annuity_income",
        "marts/fct_monthly_branch_product_line",
        # read by those models and fed by no other workbook: built too, so an arrival run
        # succeeds on a warehouse where they never were
        "staging/stg_annuity_performance",
        "marts/fct_annuity_performance",
        "reference/ref_annuity_accounts", "reference/ref_annuity_plans",
        "reference/ref_branches", "reference/ref_company_id_overrides",
        "reference/ref_company_names", "reference/ref_product_lines",
    }  # fmt: skip
    assert not any(k.startswith("raw/annuity_performance") for k in selected)
    # the run checks what it builds (reject rate, dbt tests), not the freshness of "now"
    checks = {k.to_user_string() for k in by_domain["annuity_income"].asset_check_keys or []}
    assert "raw/annuity_income:reject_rate" in checks
    assert any(k.startswith("marts/fct_annuity_income:") for k in checks)
    assert {k.split(":")[0] for k in checks} <= selected
    assert not any("freshness" in k for k in checks), checks

    # unchanged files: the same run keys (Dagster never runs a run key twice)
    assert {r.run_key for r in _arrival_requests(defs, tmp_path)} == {r.run_key for r in requests}

    # a corrected workbook in a higher V folder: a new run key for that domain only
    folder = annuity.path.parent
    base = folder.parent if folder.name.startswith("V") else folder
    corrected = write_samples(tmp_path / "other", [date(2024, 2, 1)], rows=40, seed=99)
    new_version = base / "V9"
    new_version.mkdir()
    shutil.copy(
        next(s.path for s in corrected if s.domain == "annuity_performance"),
        new_version / annuity.path.name,
    )
    again = {r.tags["wdh/domain"]: r.run_key for r in _arrival_requests(defs, tmp_path)}
    assert again["trustee_performance"] == by_domain["trustee_performance"].run_key
    assert again["annuity_performance"] != by_domain["annuity_performance"].run_key
    assert again["annuity_performance"].startswith("annuity_performance:2024-02:")


def test_turned_on_the_sensor_loads_no_month_again_that_was_loaded_from_its_workbook(
    defs: dg.Definitions, tmp_path: Path
) -> None:
    """A month whose raw asset was last materialised from the workbook there now, and its
    models since (a backfill before the sensor was turned on), is not requested. One whose
    models were not built since (a run whose raw step failed after loading it), or loaded
    from another workbook, is; and so is any month once its workbook changes."""
    from workdatahub.sources.discovery import sha256_of

    samples = write_samples(tmp_path, [date(2024, 2, 1)], rows=20, seed=3)
    trustee = next(s for s in samples if s.domain == "trustee_performance")
    annuity = next(s for s in samples if s.domain == "annuity_performance")
    graph = defs.resolve_asset_graph()

    def tick(
        instance: dg.DagsterInstance, cursor: str | None
    ) -> tuple[dict[str, str], str, str | None]:
        return arrival_tick(defs, tmp_path, instance, cursor)

    def materialised(
        instance: dg.DagsterInstance, domain: str, sha256: str, models: str = "after"
    ) -> None:
        """The month's raw asset materialised from `sha256`, and its models `after` it,
        `before` it (built from an earlier load) or `never`."""
        raw = dg.AssetKey(["raw", domain])
        built = sorted(
            dg.AssetSelection.assets(raw).downstream(include_self=False).resolve(graph), key=str
        )
        order = {"after": [raw, *built], "before": [*built, raw], "never": [raw]}[models]
        for key in order:
            time.sleep(0.002)  # (each a later timestamp than the one before)
            instance.report_runless_asset_event(
                dg.AssetMaterialization(
                    asset_key=key, partition="2024-02",
                    metadata={"sha256": sha256} if key == raw else {},
                )
            )  # fmt: skip

    with dg.instance_for_test() as instance:
        materialised(instance, "trustee_performance", sha256_of(trustee.path))
        materialised(instance, "annuity_income", sha256_of(annuity.path), models="before")
        materialised(instance, "annuity_performance", "0" * 64)  # from another workbook
        requested, cursor, _ = tick(instance, None)
        assert set(requested) == {"annuity_performance", "annuity_income"}
        assert tick(instance, cursor)[0] == requested  # (Dagster runs a run key once)

        changed = write_samples(tmp_path / "other", [date(2024, 2, 1)], rows=30, seed=9)
        shutil.copy(
            next(s.path for s in changed if s.domain == "trustee_performance"), trustee.path
        )
        again, _, _ = tick(instance, cursor)
        assert again["trustee_performance"].startswith("trustee_performance:2024-02:")
        assert again["trustee_performance"].endswith(":1")
        assert again["annuity_performance"] == requested["annuity_performance"]

    # models never built since the raw load (a run whose raw step failed): asked for
    with dg.instance_for_test() as instance:
        materialised(instance, "trustee_performance", sha256_of(trustee.path), models="never")
        assert "trustee_performance" in tick(instance, None)[0]

    # every month loaded and built: the tick says so, not that there is no workbook
    with dg.instance_for_test() as instance:
        for sample in samples:
            materialised(instance, sample.domain, sha256_of(sample.path))
        requested, _, skipped = tick(instance, None)
        assert requested == {}
        assert skipped == (
            f"3 month(s) loaded from their workbooks already; nothing new under {tmp_path}"
        )


def test_a_month_folder_linked_out_of_the_data_folder_holds_back_no_other_month(
    defs: dg.Definitions, tmp_path: Path
) -> None:
    """A month whose folder is a link out of the data folder: discovery refuses what is
    behind it (a real workbook here), and the arrival sensor skips that month with a warning
    and still asks for every other one (the refusal used to fail the whole tick)."""
    data = tmp_path / "data"
    write_samples(data, [date(2024, 2, 1)], rows=20, seed=3)
    # a real March behind the link: were nothing refused, it would be asked for
    write_samples(tmp_path / "outside", [date(2024, 3, 1)], rows=20, seed=3)
    (data / "202403").mkdir()
    (data / "202403" / "收集数据").symlink_to(tmp_path / "outside" / "202403" / "收集数据")
    requests = _arrival_requests(defs, data)
    assert sorted((r.tags["wdh/domain"], r.partition_key) for r in requests) == [
        ("annuity_income", "2024-02"),
        ("annuity_performance", "2024-02"),
        ("trustee_performance", "2024-02"),
    ]


def test_a_workbook_that_cannot_be_loaded_is_alerted_once_by_the_arrival_sensor(
    defs: dg.Definitions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy beside the month's workbook (`… - 副本.xlsx`): no run could load the month,
    so none is asked for; the operator used to hear of it only at the freshness deadline
    ("overdue"), and the tick said "no workbook found". Now an alert names the files, once
    (not every minute), and again only when the reason changes; a month whose folder holds no
    workbook yet is no alert."""
    sent: list[Alert] = []
    monkeypatch.setattr("workdatahub.defs.automation.send_alert", sent.append)
    data = tmp_path / "data"
    (sample,) = write_samples(
        data, [date(2024, 6, 1)], rows=20, seed=3, domains=("trustee_performance",)
    )
    copy = sample.path.with_name(sample.path.stem + " - 副本.xlsx")
    shutil.copy(sample.path, copy)
    (data / "202407" / "收集数据" / "业务收集").mkdir(parents=True)  # July: nothing yet
    with dg.instance_for_test() as instance:
        keys, cursor, skipped = arrival_tick(defs, data, instance, None)
        assert keys == {}
        assert skipped == (
            "1 month(s) whose workbook cannot be loaded (trustee_performance:2024-06); "
            f"nothing new under {data}"
        )
        assert [(a.what, a.domain, a.month) for a in sent] == [
            ("workbook not loaded", "trustee_performance", "2024-06")
        ]
        assert "2 candidate files" in sent[0].detail and str(copy) in sent[0].detail
        arrival_tick(defs, data, instance, cursor)  # the next minute: said already
        assert len(sent) == 1
        copy.unlink()
        keys, _, _ = arrival_tick(defs, data, instance, cursor)
        assert list(keys) == ["trustee_performance"]
        assert len(sent) == 1


def test_arrival_sensor_hashes_a_workbook_only_when_it_changed(
    defs: dg.Definitions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cursor remembers each month's folder (names, sizes, times) with the workbook's
    sha256: a tick over unchanged folders reads no workbook; a touched, rewritten or
    superseded one is hashed again, and only that one."""
    import os

    from workdatahub.sources import discovery

    hashed: list[Path] = []
    real_sha256_of = discovery.sha256_of

    def counting(path: Path) -> str:
        hashed.append(path)
        return real_sha256_of(path)

    monkeypatch.setattr(discovery, "sha256_of", counting)
    samples = write_samples(tmp_path, [date(2024, 2, 1)], rows=30, seed=5)

    def tick(instance: dg.DagsterInstance, cursor: str | None) -> tuple[dict[str, str], str]:
        hashed.clear()
        keys, cursor, _ = arrival_tick(defs, tmp_path, instance, cursor)
        return keys, cursor

    with dg.instance_for_test() as instance:
        first, cursor = tick(instance, None)
        assert len(first) == 3 and len(hashed) == 3  # one workbook per domain (annuity: shared)
        second, cursor = tick(instance, cursor)
        assert second == first and hashed == []  # nothing changed: nothing read

        # touched (same content, new mtime): hashed again, and the run key stays
        trustee = next(s.path for s in samples if s.domain == "trustee_performance")
        stat = trustee.stat()
        os.utime(trustee, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
        third, cursor = tick(instance, cursor)
        assert hashed == [trustee] and third == first

        # an Excel lock file beside the workbook changes nothing discovery would choose
        (trustee.parent / f"~${trustee.name}").write_bytes(b"lock")
        fourth, cursor = tick(instance, cursor)
        assert hashed == [] and fourth == first

        # rewritten with other content: hashed again, a new run key for that domain only
        other = write_samples(tmp_path / "other", [date(2024, 2, 1)], rows=20, seed=77)
        shutil.copyfile(next(s.path for s in other if s.domain == "trustee_performance"), trustee)
        fifth, cursor = tick(instance, cursor)
        assert hashed == [trustee]
        rewritten = real_sha256_of(trustee)
        assert fifth["trustee_performance"] == f"trustee_performance:2024-02:{rewritten}:1"
        assert {d: k for d, k in fifth.items() if d != "trustee_performance"} == {
            d: k for d, k in first.items() if d != "trustee_performance"
        }

        # a corrected workbook in a new V folder (the old file untouched): found and hashed
        annuity = next(s.path for s in samples if s.domain == "annuity_performance")
        folder = annuity.parent
        base = folder.parent if folder.name.startswith("V") else folder
        (base / "V9").mkdir()
        corrected = next(s.path for s in other if s.domain == "annuity_performance")
        shutil.copy(corrected, base / "V9" / annuity.name)
        sixth, cursor = tick(instance, cursor)
        assert sorted(hashed) == [base / "V9" / annuity.name] * 2  # both annuity domains
        assert sixth["annuity_performance"] == (
            f"annuity_performance:2024-02:{real_sha256_of(corrected)}:1"
        )
        assert sixth["trustee_performance"] == fifth["trustee_performance"]

        # the correction withdrawn: a V10 holding the original again. Its content was loaded
        # before, under the first key; the month now holds V9's rows, so it is a new key
        (base / "V10").mkdir()
        shutil.copy(annuity, base / "V10" / annuity.name)
        seventh, cursor = tick(instance, cursor)
        original = first["annuity_performance"]
        assert seventh["annuity_performance"] == f"{original}:2"
        assert seventh["annuity_income"] == f"{first['annuity_income']}:2"
        # and V10 gone again: V9's content, a new key again (not V9's, which ran)
        shutil.rmtree(base / "V10")
        eighth, cursor = tick(instance, cursor)
        assert eighth["annuity_performance"] == f"{sixth['annuity_performance'][:-2]}:3"

        # a cursor from elsewhere (or none) only costs a full scan, and forgets the counts: a
        # month whose workbook changed may be loaded once more from the same file
        ninth, _ = tick(instance, "not json")
        assert len(hashed) == 3
        assert ninth == {d: ":".join(k.split(":")[:3]) for d, k in eighth.items()}


def _schedule_tick(defs: dg.Definitions, moment: datetime) -> list[dg.RunRequest]:
    schedule = defs.resolve_schedule_def("monthly_previous_month")
    context = dg.build_schedule_context(
        scheduled_execution_time=moment, repository_def=defs.get_repository_def()
    )
    return list(schedule.evaluate_tick(context).run_requests or [])


def test_schedule_runs_each_domain_on_its_due_day_before_its_deadline(
    defs: dg.Definitions,
) -> None:
    """Default: each domain's previous month at 07:00 UTC on its due day (trustee 10,
    annuity 15), two hours before its freshness deadline, one run per domain holding its
    raw asset and the models downstream, not the other domains' raw assets."""
    schedule = defs.resolve_schedule_def("monthly_previous_month")
    assert Settings.model_fields["schedule_cron"].default == ""
    assert sorted(schedule.cron_schedule) == ["0 7 10 * *", "0 7 15 * *"]
    (trustee,) = _schedule_tick(defs, datetime(2024, 3, 10, 7, 0))
    assert (trustee.partition_key, trustee.run_key) == (
        "2024-02",
        "schedule:trustee_performance:2024-02",
    )
    selected = set(trustee.asset_selection or [])
    assert dg.AssetKey(["raw", "trustee_performance"]) in selected
    assert dg.AssetKey(["marts", "fct_trustee_performance"]) in selected
    assert not {k for k in selected if k.path[0] == "raw"} - {
        dg.AssetKey(["raw", "trustee_performance"])
    }
    checks = {k.to_user_string() for k in trustee.asset_check_keys or []}
    assert "raw/trustee_performance:reject_rate" in checks
    assert not any("freshness" in k for k in checks), checks
    annuity = _schedule_tick(defs, datetime(2024, 3, 15, 7, 0))
    assert sorted(r.tags["wdh/domain"] for r in annuity) == [
        "annuity_income",
        "annuity_performance",
    ]
    # two hours before the deadline the freshness checks and policies use
    graph = defs.resolve_asset_graph()
    for request, day in ((trustee, 10), (annuity[0], 15)):
        raw = next(k for k in request.asset_selection or [] if k.path[0] == "raw")
        policy = graph.get(raw).freshness_policy
        assert getattr(policy, "deadline_cron", None) == due_cron(day) == f"0 9 {day} * *"


def test_a_schedule_cron_no_clock_reaches_is_a_setting_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`60 25 12 * *` has the shape of a cron schedule; the code location refuses it in a
    line that names the setting."""
    from workdatahub.definitions import build_definitions
    from workdatahub.errors import ConfigError
    from workdatahub.settings import reset_settings
    from workdatahub.sources.spec import load_sources

    monkeypatch.setenv("WDH_SCHEDULE_CRON", "60 25 12 * *")
    reset_settings()
    try:
        with pytest.raises(ConfigError) as refused:
            build_definitions(load_sources())
    finally:
        monkeypatch.undo()
        reset_settings()
    assert refused.value.message.startswith(
        "invalid setting WDH_SCHEDULE_CRON: '60 25 12 * *' is not a cron schedule Dagster runs"
    )


def test_an_explicit_schedule_cron_runs_every_domain(monkeypatch: pytest.MonkeyPatch) -> None:
    from workdatahub.definitions import build_definitions
    from workdatahub.settings import reset_settings
    from workdatahub.sources.spec import load_sources

    monkeypatch.setenv("WDH_SCHEDULE_CRON", "0 6 12 * *")
    reset_settings()
    try:
        defs = build_definitions(load_sources())
        assert defs.resolve_schedule_def("monthly_previous_month").cron_schedule == "0 6 12 * *"
        requests = _schedule_tick(defs, datetime(2024, 3, 12, 6, 0))
    finally:
        monkeypatch.delenv("WDH_SCHEDULE_CRON")
        reset_settings()
    assert sorted(r.run_key for r in requests) == [
        f"schedule:{name}:2024-02"
        for name in ("annuity_income", "annuity_performance", "trustee_performance")
    ]


def test_freshness_checks_and_policies_cover_raw_and_marts(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    freshness = {
        c.asset_key.to_user_string() for c in graph.asset_check_keys if "freshness" in c.name
    }
    assert {
        "raw/annuity_performance",
        "raw/trustee_performance",
        "marts/fct_monthly_branch_product_line",
    } <= freshness
    for key in ("raw/annuity_income", "marts/fct_annuity_income"):
        policy = graph.get(dg.AssetKey.from_user_string(key)).freshness_policy
        assert policy is not None and policy.deadline_cron == "0 9 15 * *"  # type: ignore[attr-defined]
    # due days are per domain (data_sources.yml): trustee_performance is due by the 10th
    trustee = graph.get(dg.AssetKey.from_user_string("raw/trustee_performance")).freshness_policy
    assert trustee is not None and trustee.deadline_cron == "0 9 10 * *"  # type: ignore[attr-defined]


def test_alert_reaches_webhook_and_email() -> None:
    with webhook_sink() as (url, posts), smtp_sink() as (port, mails):
        settings = Settings(
            alert_webhook_url=url,  # type: ignore[arg-type]
            smtp_host="127.0.0.1",
            smtp_port=port,
            alert_email_to="ops@example.invalid",
            ui_url="http://dagster.internal:3000",
        )
        reached = send_alert(
            Alert("run of monthly_refresh failed", "annuity_income", "2024-11", "boom", "abc123"),
            settings,
        )
    assert reached == ["webhook", "email"]
    text = posts[0]["text"]
    assert "annuity_income 2024-11: run of monthly_refresh failed" in text
    assert "http://dagster.internal:3000/runs/abc123" in text
    assert (
        mails[0]["Subject"] == "[WorkDataHub] annuity_income 2024-11: run of monthly_refresh failed"
    )
    assert "boom" in mails[0].get_payload()


def test_a_long_alert_fits_a_slack_block_and_keeps_its_whole_text() -> None:
    """A Slack section block takes 3,000 characters; a longer one fails the post, and the
    alert with it."""
    from workdatahub.alerts import BLOCK_CHARS

    detail = "\n".join(
        f"- marts/fct_x: check test_{n:03d} failed: 1 failing row" for n in range(90)
    )
    with webhook_sink() as (url, posts):
        settings = Settings(alert_webhook_url=url, ui_url="http://ui:3000")  # type: ignore[arg-type]
        assert send_alert(Alert("90 checks failed", None, "2024-11", detail, "r1"), settings) == [
            "webhook"
        ]
    (post,) = posts
    block = post["blocks"][0]["text"]["text"]
    assert len(block) == BLOCK_CHARS and block.endswith("\n… cut: the run http://ui:3000/runs/r1")
    assert "test_089" in post["text"] and post["text"].startswith(block[:2000])


def test_alert_without_channels_is_logged_and_delivery_failure_never_raises(
    capsys: pytest.CaptureFixture[str],
) -> None:
    capsys.readouterr()
    assert send_alert(Alert("check failed", "x", "2024-01", "detail"), Settings()) == []
    logged = capsys.readouterr().err
    assert "alert" in logged and "check failed" in logged and "detail" in logged
    assert "alert webhook failed" not in logged
    broken = Settings(alert_webhook_url="http://127.0.0.1:1/nothing")  # type: ignore[arg-type]
    assert send_alert(Alert("check failed", "x", "2024-01", "detail"), broken) == []
    logged = capsys.readouterr().err
    assert "alert webhook failed" in logged and "Connection refused" in logged
    assert "check failed" in logged  # still logged: no channel took it


def run_sensor(defs: dg.Definitions, name: str, instance: dg.DagsterInstance, result: Any) -> None:
    """Evaluate the run status sensor `name` on the finished run `result`, as the daemon
    would (for a run failure sensor, on the run's failure event)."""
    failed = not result.success
    wanted = "PIPELINE_FAILURE" if failed else "PIPELINE_SUCCESS"
    context = dg.build_run_status_sensor_context(
        sensor_name=name,
        dagster_event=next(e for e in result.all_events if e.event_type_value == wanted),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
    )
    sensor = defs.resolve_sensor_def(name)
    sensor(context.for_run_failure() if failed else context)  # type: ignore[operator]


@pytest.mark.db
def test_failed_run_and_failed_check_are_alerted(
    defs: dg.Definitions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_tables: None
) -> None:
    """A month whose rejects exceed the threshold: the reject_rate check fails, the run
    fails, and the failure sensor alerts the webhook with domain, month, run link and the
    failed check."""
    from tests.workbooks import TRUSTEE_HEADER, trustee_folder, write_workbook
    from workdatahub.settings import reset_settings

    rows: list[list[Any]] = [[2024, 2, f"P{i}", "C1", "abc", 1, 1] for i in range(5)]
    write_workbook(
        trustee_folder(tmp_path, "202402", "x", "受托业绩.xlsx"), {"S": [TRUSTEE_HEADER, *rows]}
    )
    with webhook_sink() as (url, posts), dg.instance_for_test() as instance:
        monkeypatch.setenv("WDH_ALERT_WEBHOOK_URL", url)
        reset_settings()
        job = defs.resolve_job_def("monthly_refresh")
        result = job.execute_in_process(
            partition_key="2024-02",
            instance=instance,
            asset_selection=[dg.AssetKey(["raw", "trustee_performance"])],
            run_config={"resources": {"warehouse": {"config": {"data_dir": str(tmp_path)}}}},
            raise_on_error=False,
            tags={"wdh/domain": "trustee_performance"},
        )
        assert not result.success
        run_sensor(defs, "alert_on_run_failure", instance, result)
    reset_settings()
    texts = [p["text"] for p in posts]
    assert len(texts) == 1, texts  # the failure sensor's alert, failed checks included
    run_alert = texts[0]
    assert "run of monthly_refresh failed" in run_alert
    assert "trustee_performance 2024-02" in run_alert
    assert f"/runs/{result.run_id}" in run_alert
    assert "5 of 5 rows rejected" in run_alert
    assert "failed checks: trustee_performance check reject_rate failed" in run_alert


def _failed_month(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    asset: list[str],
    data_dir: Path | None = None,
) -> Any:
    """February's monthly_refresh run of `asset` (reading `data_dir`), which must fail."""
    config = {"data_dir": str(data_dir)} if data_dir else {}
    result = defs.resolve_job_def("monthly_refresh").execute_in_process(
        partition_key="2024-02",
        instance=instance,
        asset_selection=[dg.AssetKey(asset)],
        run_config={"resources": {"warehouse": {"config": config}}} if config else None,
        raise_on_error=False,
    )
    assert not result.success
    return result


def _run_alert(defs: dg.Definitions, instance: dg.DagsterInstance, result: Any) -> Alert:
    """The failure sensor's alert for the finished run `result`."""
    sent: list[Alert] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("workdatahub.defs.automation.send_alert", sent.append)
        run_sensor(defs, "alert_on_run_failure", instance, result)
    (alert,) = sent
    return alert


@pytest.mark.db
def test_a_bad_setting_fails_the_raw_step_in_one_line(
    defs: dg.Definitions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Production with no warehouse named: the step fails saying so, as a `wdh` command
    does, not with a wrapped traceback whose first line the alert showed ("Error occurred
    while executing op …:")."""
    from workdatahub.settings import reset_settings

    monkeypatch.setenv("WDH_ENVIRONMENT", "prod")
    monkeypatch.delenv("WDH_DATABASE_URL", raising=False)
    reset_settings()
    try:
        with dg.instance_for_test() as instance:
            result = _failed_month(defs, instance, ["raw", "trustee_performance"], tmp_path)
            (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
            assert failure.step_failure_data.error.cls_name == "Failure"
            alert = _run_alert(defs, instance, result)
    finally:
        monkeypatch.undo()
        reset_settings()
    assert alert.detail == (
        "raw__trustee_performance: trustee_performance: WDH_ENVIRONMENT=prod needs "
        "WDH_DATABASE_URL (no embedded Postgres)"
    )


@pytest.mark.db
@pytest.mark.slow
def test_a_failed_dbt_step_is_alerted_with_dbts_error(
    defs: dg.Definitions, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dagster-dbt's message begins "The dbt CLI process with command" and gives the
    command and dbt's errors on the lines after: the alert said only that first line."""
    import psycopg

    from workdatahub.settings import reset_settings

    target = psycopg.conninfo.conninfo_to_dict(pg_url)
    target["dbname"] = "no_such_warehouse"
    monkeypatch.setenv("WDH_DBT_DATABASE_URL", psycopg.conninfo.make_conninfo(**target))
    reset_settings()
    try:
        with dg.instance_for_test() as instance:
            result = _failed_month(defs, instance, ["staging", "stg_trustee_performance"])
            alert = _run_alert(defs, instance, result)
    finally:
        monkeypatch.undo()
        reset_settings()
    assert alert.detail.startswith("dbt_models: dbt build failed (exit code 2): Database Error")
    assert 'database "no_such_warehouse" does not exist' in alert.detail
    assert "\n" not in alert.detail


@pytest.mark.db
@pytest.mark.slow
def test_succeeded_run_with_a_failed_warning_check_is_alerted(
    defs: dg.Definitions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_tables: None
) -> None:
    """A workbook carrying a 机构名称 the branch reference lacks: the month loads and the run
    succeeds (the relationships test is severity warn; the rows count under G00), and the
    check sensor, not the run failure sensor, alerts the failed check with the month and the
    run link."""
    import openpyxl

    from workdatahub.settings import reset_settings

    (sample,) = write_samples(
        tmp_path, [date(2024, 2, 1)], rows=20, seed=4, quirks=False,
        domains=("annuity_performance",),
    )  # fmt: skip
    book = openpyxl.load_workbook(sample.path)
    sheet = book["规模明细"]
    header = [c.value for c in sheet[1]]
    column = header.index("机构名称") + 1
    sheet.cell(row=2, column=column, value="火星")  # no such branch in ref_branches
    book.save(sample.path)

    # what the arrival sensor asks for this workbook, on a warehouse where nothing was built
    (request,) = [
        r
        for r in _arrival_requests(defs, tmp_path)
        if r.tags["wdh/domain"] == "annuity_performance"
    ]
    selection = request.asset_selection or []
    assert dg.AssetKey(["marts", "fct_monthly_branch_product_line"]) in selection
    with webhook_sink() as (url, posts), dg.instance_for_test() as instance:
        monkeypatch.setenv("WDH_ALERT_WEBHOOK_URL", url)
        reset_settings()
        # the job as the daemon launches the request: its assets and its checks
        job = defs.resolve_job_def("monthly_refresh").get_subset(
            asset_selection=set(selection), asset_check_selection=set(request.asset_check_keys)
        )
        result = job.execute_in_process(
            partition_key="2024-02",
            instance=instance,
            run_config={"resources": {"warehouse": {"config": {"data_dir": str(tmp_path)}}}},
            raise_on_error=False,
            tags={"wdh/domain": "annuity_performance"},
        )
        assert result.success
        evaluated = {c.check_name for c in result.get_asset_check_evaluations()}
        assert "reject_rate" in evaluated and not any("freshness" in c for c in evaluated)
        failed = [c for c in result.get_asset_check_evaluations() if not c.passed]
        assert failed and all(c.severity == dg.AssetCheckSeverity.WARN for c in failed)
        unknown_name = "relationships_stg_annuity_performance_branch_name"
        assert any(c.check_name.startswith(unknown_name) for c in failed)

        run_sensor(defs, "alert_on_failed_check", instance, result)
    reset_settings()
    # one alert, the failed check's, with dbt's count of failing rows; nothing else
    (check_alert,) = [p["text"] for p in posts]
    (check,) = failed
    assert check_alert.startswith(
        f"[WorkDataHub] staging/stg_annuity_performance 2024-02: check {check.check_name} "
        "failed\n1 failing row (dbt test, severity warn)\n"
    )
    assert f"/runs/{result.run_id}" in check_alert


def test_a_runs_failed_checks_are_one_alert_per_month() -> None:
    """A month missing on its due day fails each asset's freshness check in one run: one
    alert (not seven), naming each; a check of another month, or alone, keeps its own."""
    from workdatahub.alerts import Alert
    from workdatahub.defs.automation import per_month

    assets = ["annuity_performance", "trustee_performance", "marts/fct_annuity_income"]
    missing = [
        Alert("check freshness_check failed", a, "2026-11", f"expected {a}", "r1") for a in assets
    ]
    other = Alert("check reject_rate failed", "annuity_income", "2026-10", "30% rejected", "r1")
    (month, alone) = per_month([*missing, other])
    assert month == Alert(
        what="3 checks failed",
        domain=None,
        month="2026-11",
        detail="\n".join(f"- {a}: check freshness_check failed: expected {a}" for a in assets),
        run_id="r1",
    )
    assert alone is other
    # the same domain's checks keep it in the subject
    (same,) = per_month([other, Alert("check rows failed", "annuity_income", "2026-10", "0", "r1")])
    assert same.subject() == "[WorkDataHub] annuity_income 2026-10: 2 checks failed"
    assert per_month([]) == []
    # a month of many: the first lines, and how many more the run lists
    many = [Alert(f"check c{n} failed", "annuity_income", "2026-10", "x", "r1") for n in range(20)]
    (said,) = per_month(many)
    lines = said.detail.splitlines()
    assert len(lines) == 16 and lines[-1] == "… 5 more: see the run", lines
    assert said.what == "20 checks failed"


def _latest_due_month(now: datetime, due_day: int = 15) -> date:
    """The month whose data is due by the most recent deadline (09:00 UTC on due_day)."""
    first = date(now.year, now.month, 1)
    previous = date(first.year - (first.month == 1), (first.month - 2) % 12 + 1, 1)
    if (now.day, now.hour) >= (due_day, 9):
        return previous
    return date(previous.year - (previous.month == 1), (previous.month - 2) % 12 + 1, 1)


@pytest.mark.db
def test_freshness_fails_until_the_latest_due_month_is_loaded(
    defs: dg.Definitions, tmp_path: Path, fresh_tables: None
) -> None:
    due = _latest_due_month(datetime.utcnow(), due_day=10)  # trustee_performance: due_day 10
    key = dg.AssetKey(["raw", "trustee_performance"])
    check_key = next(
        c for c in defs.resolve_asset_graph().asset_check_keys
        if c.asset_key == key and "freshness" in c.name
    )  # fmt: skip
    global_job = defs.resolve_implicit_global_asset_job_def()

    def evaluate(instance: dg.DagsterInstance) -> bool:
        checks_only = global_job.get_subset(
            asset_selection=set(), asset_check_selection={check_key}
        )
        result = checks_only.execute_in_process(instance=instance)
        (evaluation,) = result.get_asset_check_evaluations()
        return evaluation.passed

    write_samples(tmp_path, [due], rows=40, domains=("trustee_performance",))
    older = date(due.year - 1, due.month, 1)
    write_samples(tmp_path, [older], rows=40, domains=("trustee_performance",))
    with dg.instance_for_test() as instance:
        job = defs.resolve_job_def("monthly_refresh")
        run_config = {"resources": {"warehouse": {"config": {"data_dir": str(tmp_path)}}}}

        def load(month: date) -> None:
            assert job.execute_in_process(
                partition_key=f"{month:%Y-%m}", instance=instance, asset_selection=[key],
                run_config=run_config,
            ).success  # fmt: skip

        assert not evaluate(instance)  # nothing loaded
        load(older)
        assert not evaluate(instance)  # an old month loaded later does not make it fresh
        load(due)
        assert evaluate(instance)


def test_a_failed_freshness_check_is_alerted_for_the_month_it_misses(
    defs: dg.Definitions, tmp_path: Path
) -> None:
    """raw/trustee_performance, due on day 10 at 09:00 UTC, never loaded: its freshness
    check fails, and the alert names the month it expected (not the run's, which has none)
    and Dagster's reason (not the check's parameters)."""
    from datetime import UTC

    from workdatahub.defs.automation import failed_checks
    from workdatahub.defs.raw_assets import build_raw_asset
    from workdatahub.defs.resources import WarehouseResource
    from workdatahub.sources.spec import load_sources

    key = dg.AssetKey(["raw", "trustee_performance"])
    check = next(c for c in defs.asset_checks if any(k.asset_key == key for k in c.check_keys))
    keys = [k for k in check.check_keys if k.asset_key == key]
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [build_raw_asset(load_sources().domain("trustee_performance")), check],
            instance=instance,
            resources={"warehouse": WarehouseResource(data_dir=str(tmp_path))},
            selection=dg.AssetSelection.checks(*keys),
            raise_on_error=False,
        )
        (alert,) = failed_checks(instance, result.run_id)
    now = datetime.now(UTC)
    # the last deadline passed: day 10 at 09:00 of this month or the one before; the month
    # due by it is the one before that deadline's month
    deadline_month = now.year * 12 + now.month - 1 - (0 if (now.day, now.hour) >= (10, 9) else 1)
    due = deadline_month - 1
    assert (alert.domain, alert.what) == ("trustee_performance", "check freshness_check failed")
    assert alert.month == f"{due // 12}-{due % 12 + 1:02d}"
    assert f"expect partition {alert.month} to have arrived" in alert.detail


def test_a_run_started_from_the_command_line_is_alerted_as_the_daemon_sees_it() -> None:
    """The daemon evaluates the alert sensors in the project's code location; a run started
    by `dagster asset materialize` or `dg launch` has no code location. Its failure is
    alerted, without the exception's qualified name."""
    from dagster._core.definitions.sensor_definition import SensorEvaluationContext
    from dagster._core.remote_origin import RegisteredCodeLocationOrigin

    from workdatahub.definitions import defs

    repository = defs.get_repository_def()

    def tick(instance: dg.DagsterInstance, cursor: str | None) -> str | None:
        context = SensorEvaluationContext(
            instance_ref=None,
            instance=instance,
            cursor=cursor,
            repository_name=repository.name,
            repository_def=repository,
            sensor_name="alert_on_run_failure",
            code_location_origin=RegisteredCodeLocationOrigin("workdatahub"),
        )
        defs.resolve_sensor_def("alert_on_run_failure").evaluate_tick(context)
        return context.cursor

    @dg.op
    def load_the_month() -> None:
        raise dg.Failure("raw.trustee_performance 2024-02: 5 of 5 rows rejected")

    @dg.job
    def launched_from_the_cli() -> None:
        load_the_month()

    sent: list[Alert] = []
    with dg.instance_for_test() as instance, pytest.MonkeyPatch.context() as patch:
        patch.setattr("workdatahub.defs.automation.send_alert", sent.append)
        cursor = tick(instance, None)  # the sensor's first tick starts after what exists
        result = launched_from_the_cli.execute_in_process(instance=instance, raise_on_error=False)
        assert not result.success and result.dagster_run.remote_job_origin is None
        tick(instance, cursor)
    (alert,) = sent
    assert alert.what == "run of launched_from_the_cli failed"
    assert alert.detail == "load_the_month: raw.trustee_performance 2024-02: 5 of 5 rows rejected"


def test_a_month_missing_on_its_due_day_is_one_alert(
    defs: dg.Definitions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The freshness sensor evaluates every asset's freshness check in one run: nothing
    loaded, each fails, and the on-call gets one alert per month missed naming them all
    (the raw assets and the marts; trustee_performance is due earlier, so between its due
    day and the others' two months may be missed), not one per asset."""
    from workdatahub.defs.automation import failed_checks
    from workdatahub.settings import reset_settings

    freshness = {
        c for c in defs.resolve_asset_graph().asset_check_keys if c.name == "freshness_check"
    }
    assert len(freshness) >= 7
    checks_only = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=set(), asset_check_selection=freshness
    )
    with webhook_sink() as (url, posts), dg.instance_for_test() as instance:
        monkeypatch.setenv("WDH_ALERT_WEBHOOK_URL", url)
        reset_settings()
        result = checks_only.execute_in_process(instance=instance, raise_on_error=False)
        assert len([c for c in result.get_asset_check_evaluations() if not c.passed]) == len(
            freshness
        )
        missed = failed_checks(instance, result.run_id)
        run_sensor(defs, "alert_on_failed_check", instance, result)
    reset_settings()
    by_month: dict[str | None, list[str]] = {}
    for alert in missed:
        by_month.setdefault(alert.month, []).append(str(alert.domain))
    assert len(posts) == len(by_month) < len(freshness)
    for post in posts:
        subject, *lines = post["text"].splitlines()
        month = next(m for m in by_month if m and f" {m}: " in subject)
        if len(by_month[month]) == 1:  # (a month one asset alone missed: its own alert)
            assert subject.endswith(f"{by_month[month][0]} {month}: check freshness_check failed")
            continue
        named = [line for line in lines if line.startswith("- ")]
        assert subject.endswith(f" {month}: {len(by_month[month])} checks failed")
        assert sorted(line.split(":")[0][2:] for line in named) == sorted(by_month[month])

"""The retention benchmark: `.venv/bin/python bench/cleanup.py [--rows N] [--batch-size 5000]` (README, "Benchmarks").

On a throwaway PostgreSQL: N (1,000,000) superseded push sessions 45 days old, spread over 1,000 bindings, plus
1,000 prepared ones that must stay; then, from the same starting state each time:

  command  `manage.py cleanup_sessions --older-than 30d` (the production settings, DATABASE_POOL=1)
  psql     a plain batched DELETE in psql: a DO loop of DELETE … WHERE id IN (SELECT id … LIMIT 5000), each batch
           committed

and prints, for each, the wall time, the peak RSS of the client process (its VmHWM, sampled every 20 ms), its
CPU, and the CPU the PostgreSQL server spent. Writes bench/results/cleanup-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import CpuMeter, Postgres, log  # noqa: E402

PREPARED = 1000
BINDINGS = 1000


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="superseded sessions to delete (1,000,000)")
    parser.add_argument("--batch-size", type=int, default=5000, help="rows per batch, both ways (5000)")
    return parser.parse_args()


def create_bindings() -> list:
    from django.core.management import call_command

    from acp.models import Device, Environment, User
    from bindings.models import WorkspaceBinding

    call_command("migrate", verbosity=0, interactive=False)
    user = User.objects.create_user("bench")
    device = Device.objects.create(user=user, name="d")
    environment = Environment.objects.create(user=user, name="e")
    bindings = WorkspaceBinding.objects.bulk_create(
        [
            WorkspaceBinding(user=user, device=device, environment=environment, local_path=f"/w/{i}")
            for i in range(BINDINGS)
        ]
    )
    return [b.pk for b in bindings]


def fill(bindings: list, rows: int) -> float:
    """Empty the table, then insert `rows` old superseded sessions and PREPARED recent prepared ones (one
    INSERT … SELECT generate_series each, as tests/acp/test_cleanup.py does); VACUUM ANALYZE. Returns seconds."""
    from django.db import connection
    from django.utils import timezone

    from bindings.models import SyncSession, WorkspaceBinding

    started = time.monotonic()
    table, bindings_table = SyncSession._meta.db_table, WorkspaceBinding._meta.db_table
    insert = f"""
        WITH b AS (
            SELECT id, user_id, device_id, environment_id, row_number() OVER (ORDER BY id) - 1 AS n
            FROM {bindings_table} WHERE id = ANY(%(bindings)s)
        )
        INSERT INTO {table}
            (id, user_id, workspace_binding_id, direction, device_id, environment_id, status,
             plan_signature, plan, metadata, created_at, updated_at)
        SELECT gen_random_uuid(), b.user_id, b.id, 'push', b.device_id, b.environment_id, %(status)s,
               %(prefix)s || g, '{{"files": []}}'::jsonb, '{{}}'::jsonb, %(at)s, %(at)s
        FROM generate_series(0, %(count)s - 1) AS g JOIN b ON b.n = g %% %(nb)s
    """
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {table}")
        cursor.execute(
            insert,
            {
                "bindings": bindings,
                "status": "superseded",
                "prefix": "old-",
                "at": now - dt.timedelta(days=45),
                "count": rows,
                "nb": len(bindings),
            },
        )
        # One prepared session per binding (the constraint allows no more), recent: they must stay.
        cursor.execute(
            insert,
            {
                "bindings": bindings,
                "status": "prepared",
                "prefix": "new-",
                "at": now,
                "count": PREPARED,
                "nb": len(bindings),
            },
        )
    connection.close()
    common_pg.psql(f"VACUUM ANALYZE {table};")
    return time.monotonic() - started


def counts() -> dict:
    from django.db import connection

    from bindings.models import SyncSession

    result = {status: SyncSession.objects.filter(status=status).count() for status in ("superseded", "prepared")}
    connection.close()
    return result


def measure(label: str, command: list[str], env: dict | None = None, stdin: str | None = None) -> dict:
    """Run `command` as a child; wall time, its peak RSS (VmHWM) and CPU (os.wait4), and PostgreSQL's CPU."""
    meter = CpuMeter({"postgres": common_pg.pids}).start()
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=common.ROOT,
        env=env,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    peak = {"mb": 0.0}
    done = threading.Event()

    def sample():
        # ru_maxrss would not do: it keeps the high-water mark of the forked copy of this process from before exec.
        while not done.is_set():
            peak["mb"] = max(peak["mb"], common.peak_rss_mb(process.pid))
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    if stdin is not None:
        process.stdin.write(stdin)
        process.stdin.close()
    output = process.stdout.read()
    peak["mb"] = max(peak["mb"], common.peak_rss_mb(process.pid))  # stdout closed: it is exiting
    done.set()
    sampler.join()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    cpu = meter.stop()
    if process.returncode != 0:
        raise RuntimeError(f"{label} failed ({process.returncode}):\n{output[-3000:]}")
    return {
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(peak["mb"], 1),
        "client_cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "postgres_cpu_s": cpu["postgres_cpu_s"],
        "output": output.strip().splitlines()[-4:],
    }


def psql_loop(batch_size: int) -> str:
    from bindings.models import SyncSession

    table = SyncSession._meta.db_table
    return f"""
DO $$
DECLARE deleted integer;
BEGIN
  LOOP
    DELETE FROM {table} WHERE id IN (
      SELECT id FROM {table}
      WHERE status IN ('superseded', 'cancelled') AND updated_at < now() - interval '30 days'
      LIMIT {batch_size}
    );
    GET DIAGNOSTICS deleted = ROW_COUNT;
    EXIT WHEN deleted = 0;
    COMMIT;
  END LOOP;
END $$;
"""


common_pg: Postgres


def main() -> int:
    global common_pg
    args = parse_args()
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    log("PostgreSQL: starting a throwaway cluster")
    common_pg = Postgres(shared_buffers="1GB").start()
    common.setup_django(common_pg.url)
    bindings = create_bindings()
    from bindings.models import SyncSession

    sync_table = SyncSession._meta.db_table
    env = common.server_env(common_pg.url)
    results: dict = {"stamp": stamp, "rows": args.rows, "batch_size": args.batch_size, "runs": {}}

    log(f"fill: {args.rows:,} superseded sessions (45 days old) + {PREPARED} prepared")
    results["fill_s"] = round(fill(bindings, args.rows), 1)
    before = counts()
    log(f"command: manage.py cleanup_sessions --older-than 30d --batch-size {args.batch_size}")
    command = [sys.executable, "manage.py", "cleanup_sessions", "--older-than", "30d"]
    results["runs"]["command"] = measure("command", [*command, "--batch-size", str(args.batch_size)], env=env)
    results["runs"]["command"]["after"] = counts()
    common_pg.psql(f"VACUUM {sync_table};")
    results["runs"]["command_nothing_left"] = measure("command again", command, env=env)

    log(f"fill again: {args.rows:,} + {PREPARED}")
    fill(bindings, args.rows)
    log(f"psql: DO loop of DELETE … WHERE id IN (SELECT id … LIMIT {args.batch_size}), a COMMIT per batch")
    psql = [str(common_pg.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", common_pg.url]
    results["runs"]["psql"] = measure("psql", psql, stdin=psql_loop(args.batch_size))
    results["runs"]["psql"]["after"] = counts()
    results["before"] = before

    print(f"\ncleanup_sessions benchmark: {args.rows:,} superseded push sessions, batches of {args.batch_size}\n")
    print(
        f"{'':34} {'wall':>9} {'peak RSS':>10} {'client CPU':>11} {'PostgreSQL CPU':>15}   left (superseded/prepared)"
    )
    rows = [
        ("manage.py cleanup_sessions", results["runs"]["command"]),
        ("psql batched DELETE", results["runs"]["psql"]),
        ("cleanup_sessions, nothing left", results["runs"]["command_nothing_left"]),
    ]
    for label, run in rows:
        after = run.get("after")
        left = f"{after['superseded']}/{after['prepared']}" if after else ""
        print(
            f"{label:<34} {run['wall_s']:>8.1f}s {run['peak_rss_mb']:>8.1f}MB {run['client_cpu_s']:>10.1f}s "
            f"{run['postgres_cpu_s']:>14.1f}s   {left}"
        )
    command_run, psql_run = results["runs"]["command"], results["runs"]["psql"]
    results["command_over_psql_wall"] = round(command_run["wall_s"] / max(0.01, psql_run["wall_s"]), 2)
    print(f"\ncommand / psql wall time: {results['command_over_psql_wall']:.2f}")
    ok = command_run["after"] == {"superseded": 0, "prepared": PREPARED} and psql_run["after"] == {
        "superseded": 0,
        "prepared": PREPARED,
    }
    results["all_old_deleted_prepared_kept"] = ok
    print(f"every old superseded session deleted, every prepared one kept: {'yes' if ok else 'NO'}")
    path = common.RESULTS / f"cleanup-{stamp}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"results: {path.relative_to(common.ROOT)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

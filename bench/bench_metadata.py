"""What the other topics of a shared cluster cost a worker (issue 10, metadata): one published
simulated stream replayed by the `--clock event` worker of bench_runtime.py, before the fix
(MD_VARIANT=stock, bench/metadata_shim.py: faust's producer, whose metadata requests list every
topic of the cluster) and after (streams.consumer_port.NamedTopicsApp), alternating in the same run, first with
the broker as it is, then with `--stale` more one-partition topics created under this run's own
prefix (deleted at the end, with the run's other topics; no other topic is touched).

    .venv/bin/python bench/bench_metadata.py [--stale 3000] [--orders 3000] [--rounds 2]

Also the CPU one metadata answer listing every topic costs this process to decode, with and
without the stale topics. Figures are measured, never asserted: bench/results/metadata-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaClient  # noqa: E402
from aiokafka.admin import NewTopic  # noqa: E402
from aiokafka.protocol.metadata import MetadataRequest  # noqa: E402

from bench import bench_runtime  # noqa: E402
from orderwatch.streams.settings import Settings  # noqa: E402
from orderwatch.streams.worker import worker_env  # noqa: E402

VARIANTS = ("stock", "named")


def spawn_metadata_shim(settings: Settings, log: Any, *, levers: str = "", python: str | None = None) -> Any:
    """bench_runtime.spawn_shim through bench/metadata_shim.py; `levers` carries the variant."""
    env = {**worker_env(settings), "BENCH_LEVERS": "", "MD_VARIANT": levers}
    cmd = [python or sys.executable, str(ROOT / "bench/metadata_shim.py"), "worker", "--clock", "event"]
    return subprocess.Popen([*cmd, "--no-handlers"], env=env, stdout=log, stderr=subprocess.STDOUT)


async def all_topics_answer(settings: Settings, repeat: int = 5) -> dict[str, Any]:
    """Process CPU of one metadata request listing every topic (encode, answer, decode), median
    of `repeat`, and the topics and bytes it lists."""
    client = AIOKafkaClient(bootstrap_servers=settings.kafka_bootstrap)
    await client.bootstrap()
    try:
        cpus = []
        for _ in range(repeat):
            started = time.process_time()
            response = await client.send(client.get_random_node(), MetadataRequest(None))
            cpus.append(time.process_time() - started)
        topics = len(response.topics)
    finally:
        await client.close()
    return {"topics": topics, "cpu_ms_median": round(sorted(cpus)[len(cpus) // 2] * 1000, 2)}


async def create_stale(settings: Settings, prefix: str, count: int) -> int:
    async with bench_runtime._admin(settings) as admin:
        names = [f"{prefix}{i:05d}" for i in range(count)]
        for start in range(0, count, 500):
            await admin.create_topics([NewTopic(n, 1, 1) for n in names[start : start + 500]])
        for _ in range(300):  # until the broker's metadata lists them all
            if sum(1 for t in await admin.list_topics() if t.startswith(prefix)) >= count:
                break
            await asyncio.sleep(1)
    return count


async def drop_prefixed(settings: Settings, prefix: str) -> int:
    """Delete the topics whose name starts with `prefix` (this run's own), in batches."""
    async with bench_runtime._admin(settings) as admin:
        mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
        for start in range(0, len(mine), 500):
            await admin.delete_topics(mine[start : start + 500])
    return len(mine)


def uptime() -> str:
    return Path("/proc/loadavg").read_text().strip()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    run = f"md{int(time.time())}"
    stale_prefix = f"mdstale{int(time.time())}-"
    settings = Settings(topic_prefix=f"{run}-", app_id=f"ow-{run}", partitions=4, web_port=args.web_port)
    bench_runtime.spawn_shim = spawn_metadata_shim
    figures: dict[str, Any] = {
        "broker_topics_at_start": len(await bench_runtime.broker_topics(settings)),
        "loadavg_at_start": uptime(),
        "stale_topics_created": args.stale,
        "phases": [],
    }
    try:
        with tempfile.TemporaryDirectory() as tmp:
            os.chdir(tmp)  # faust keeps each app's data directory in the working directory
            _, sent = await bench_runtime.publish_simulation(settings, args.orders, Path(tmp))
            total = sum(sent.values())
            figures["events"] = total
            print(f"published {total:,} events", flush=True)
            n = 0
            for stale in (0, args.stale):
                if stale:
                    began = time.perf_counter()
                    await create_stale(settings, stale_prefix, stale)
                    print(f"created {stale} stale topics in {time.perf_counter() - began:.0f} s", flush=True)
                phase: dict[str, Any] = {
                    "stale_topics": stale,
                    "broker_topics": len(await bench_runtime.broker_topics(settings)),
                    "all_topics_answer": await all_topics_answer(settings),
                    "runs": [],
                }
                print(f"phase: {phase}", flush=True)
                for r in range(args.rounds):
                    for variant in VARIANTS if r % 2 == 0 else reversed(VARIANTS):
                        n += 1
                        own = settings.model_copy(update={"app_id": f"ow-{run}-{variant}{n}"})
                        with (Path(tmp) / f"{variant}{n}.log").open("wb") as log:
                            wr = await bench_runtime.worker_run(own, total, log, levers=variant)
                        wr.pop("settings", None)
                        wr.pop("census", None)
                        row = {"round": r, "variant": variant, "loadavg": uptime(), **wr}
                        phase["runs"].append(row)
                        print(row, flush=True)
                figures["phases"].append(phase)
    finally:
        os.chdir(ROOT)
        figures["stale_topics_deleted"] = await drop_prefixed(settings, stale_prefix)
        figures["run_topics_deleted"] = await bench_runtime.drop_run_topics(settings, run)
        figures["loadavg_at_end"] = uptime()
        print(f"deleted {figures['stale_topics_deleted']} stale and {figures['run_topics_deleted']} run topics")
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stale", type=int, default=3000, help="one-partition topics created for the second phase")
    ap.add_argument("--orders", type=int, default=3000, help="simulated orders (3000: about 56k events)")
    ap.add_argument("--rounds", type=int, default=2, help="stock and named workers, alternating, per phase")
    ap.add_argument("--web-port", type=int, default=6177, help="the workers' web port (bench_runtime uses 6199)")
    args = ap.parse_args()
    figures = asyncio.run(main_async(args))
    bench_runtime.write_report("metadata", figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`orderwatch worker` as bench/worker_shim.py runs it, with the metadata requests of before the fix
when MD_VARIANT=stock (bench_metadata.py's "before"): faust's own producer, whose client asks for
every topic of the cluster (streams/consumer_port.py says why), and topic checks that list every topic.

    MD_VARIANT=stock|named python bench/metadata_shim.py worker --clock event --no-handlers
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


async def _every_topic_metadata(client: Any, names: Iterable[str]) -> dict[str, Any]:
    """streams.topics.topic_metadata as it was: an answer listing every topic, then the wanted."""
    from aiokafka.protocol.metadata import MetadataRequest

    wanted = set(names)
    response = await client.send(client.get_random_node(), MetadataRequest(None))
    return {t["topic"]: t for t in response.to_object()["topics"] if t["error_code"] == 0 and t["topic"] in wanted}


def stock() -> None:
    import faust

    from orderwatch.streams import consumer_port, topics

    consumer_port.NamedTopicsApp._new_producer = faust.App._new_producer  # type: ignore[method-assign,assignment]
    topics.topic_metadata = _every_topic_metadata


def main() -> int:
    variant = os.environ.get("MD_VARIANT", "named")
    if variant == "stock":
        stock()
    elif variant != "named":
        msg = f"MD_VARIANT must be stock or named, not {variant!r}"
        raise SystemExit(msg)
    print(f"metadata shim: {variant}", flush=True)
    from bench.worker_shim import main as shim_main

    return shim_main()


if __name__ == "__main__":
    raise SystemExit(main())

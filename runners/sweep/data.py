"""A sweep's data, built once per cluster before any of its runs starts.

The driver prepares every distinct data setting of the runs it is about to submit (the
tokenizer and the token ids, under the storage's cache) and seals them with a manifest of their
SHA-256 digests (``Storage.publish_data``). Each run then checks its node's copy against the
manifest (``Storage.verify_data``): no node retrains the tokenizer, and none trains on other
tokens than the sweep built.
"""

from __future__ import annotations

import logging

from gatelab.runners.data.tokens import DataConfig, cache_files, data_key, prepare_data
from gatelab.runners.run.storage import Storage
from gatelab.runners.sweep.plan import PlannedRun

logger = logging.getLogger("gatelab")


def prepare_sweep_data(todo: list[PlannedRun], storage: Storage) -> list[str]:
    """Build and seal the data of ``todo``'s runs where it is not sealed yet; the keys of
    the data settings, in the order first met."""
    configs: dict[str, DataConfig] = {}
    for p in todo:
        cfg = p.setting.data_config(storage.cache_dir)
        configs.setdefault(data_key(cfg), cfg)
    for key, cfg in configs.items():
        if storage.verify_data(key):
            continue
        try:
            data = prepare_data(cfg)
        except Exception as err:  # an empty corpus, unreadable shards: each run records it
            logger.warning("data %s could not be prepared (%s: %s); its runs will fail with "
                           "the cause", key, type(err).__name__, err)
            continue
        manifest = storage.publish_data(key, cache_files(cfg))
        logger.info("data %s (%s) %s in %.1f s; sealed in %s", data.corpus_name, key,
                    "found" if data.from_cache else "built", data.seconds, manifest)
    return list(configs)

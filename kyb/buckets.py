"""Get or create JetStream key-value buckets and streams, one way for every component: look
first (a restricted component may read a bucket or stream it may not create), create what is
missing with file storage, and take what a concurrent creator made. NATS errors become
``kyb.errors`` here (Unreachable when JetStream does not answer or refuses)."""

from __future__ import annotations

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from kyb import errors


async def ensure_kv(js: JetStreamContext, bucket: str, *, replicas: int = 1, history: int = 1,
                    direct: bool = True) -> KeyValue:
    """The bucket, created (file storage, ``history`` revisions per key, direct gets) if missing."""
    try:
        return await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        pass
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as e:
        raise errors.Unreachable(f"JetStream does not answer: {e}") from e
    config = api.KeyValueConfig(bucket=bucket, history=history, storage=api.StorageType.FILE, replicas=replicas,
                                direct=direct)
    try:
        return await js.create_key_value(config)
    except nats.js.errors.APIError:
        try:
            return await js.key_value(bucket)  # created meanwhile by someone else
        except nats.js.errors.BucketNotFoundError as e:
            raise errors.Unreachable(f"cannot create bucket {bucket}: {e}") from e
    except (nats.errors.Error, OSError) as e:
        raise errors.Unreachable(f"cannot create bucket {bucket}: {e}") from e


def log_stream(name: str, subject: str, *, max_age: float, max_bytes: int, replicas: int = 1) -> api.StreamConfig:
    """A stream of ``<subject>.>`` in files that keeps ``max_age`` seconds and ``max_bytes`` at
    the most, the oldest messages going first (the shape of the events and traces streams)."""
    return api.StreamConfig(
        name=name,
        subjects=[f"{subject}.>"],
        max_age=max_age,
        max_bytes=max_bytes,
        storage=api.StorageType.FILE,
        num_replicas=replicas,
        discard=api.DiscardPolicy.OLD,
    )


async def ensure_stream(js: JetStreamContext, config: api.StreamConfig, *, update: bool = True) -> None:
    """The stream, created if missing; with ``update``, an existing one whose subjects or
    limits differ is updated to ``config``, otherwise left as it is."""
    name = config.name or ""
    try:
        have = (await js.stream_info(name)).config
    except nats.js.errors.NotFoundError:
        have = None
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as e:
        raise errors.Unreachable(f"JetStream does not answer: {e}") from e
    if have is not None and (not update or (have.subjects == config.subjects and have.max_age == config.max_age
                                            and have.max_bytes == config.max_bytes)):
        return
    try:
        if have is not None:
            await js.update_stream(config)
            return
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError:
            if update:
                await js.update_stream(config)  # created meanwhile by someone else with other limits
    except (nats.errors.Error, OSError) as e:
        raise errors.Unreachable(f"cannot create stream {name}: {e}") from e

"""RQ's job hash for the gateway's jobs, written without building an RQ Job per enqueue.

RQ's enqueue builds a Job object, fills in a dozen attributes and serialises
each with ``to_dict``: of the 270-300 us of CPU an enqueue of one job cost
here, about 110 went to that; the rest is the round trip. Every job the gateway
enqueues calls the same function (``gateway.jobs.run``) with the same options;
only the job's id, its arguments and its timestamps differ. So RQ builds the
hash of one job when the queue is opened (the template), and each job copies
it and fills in those fields as ``Job.to_dict`` would: the pickled call,
compressed; the call string RQ shows as the description; the creation and
enqueue times. tests/integration/test_rq_job_hash.py checks, field by field,
that the hash equals the one RQ writes for the same call and that RQ reads it
back as that job, so an RQ upgrade that changes the format fails there (the
end-to-end tests run the jobs through RQ's worker).

What RQ's enqueue does beyond the hash is kept: the queue's name in RQ's set
of queues, then the job's id pushed at the queue's tail, after its hash, in
the same pipeline.
"""

from __future__ import annotations

import zlib
from datetime import datetime
from uuid import uuid4

from rq import Queue
from rq.job import Job, JobStatus
from rq.utils import get_call_string, utcformat

TEMPLATE_ARGUMENT = "template"
# As Job.get_call_string truncates each argument's repr.
CALL_STRING_MAX_LENGTH = 75


class JobHashes:
    """Writes jobs calling ``func`` with ``options`` (RQ's enqueue options) into ``queue``, in a pipeline."""

    def __init__(self, queue: Queue, func: str, **options):
        template = queue.create_job(func, args=(TEMPLATE_ARGUMENT,), status=JobStatus.QUEUED, **options)
        template.origin = queue.name  # as the queue's enqueue sets them
        template.enqueued_at = template.created_at
        self._template = template.to_dict()
        self._func = func
        self._dumps = queue.serializer.dumps
        self._queue_key = queue.key
        self._queues_key = queue.redis_queues_keys

    def hash_of(self, args: tuple, moment: datetime) -> dict:
        """The fields of a job calling ``func(*args)``, enqueued at ``moment`` (UTC, naive or aware)."""
        stamp = utcformat(moment)
        return {
            **self._template,
            "created_at": stamp,
            "enqueued_at": stamp,
            "data": zlib.compress(self._dumps((self._func, None, args, {}))),
            "description": get_call_string(self._func, args, {}, max_length=CALL_STRING_MAX_LENGTH),
        }

    def write(self, pipeline, calls: list[tuple], moment: datetime) -> list[str]:
        """Queue one job per ``args`` in ``calls``, in order; the jobs' ids. The caller executes the pipeline."""
        pipeline.sadd(self._queues_key, self._queue_key)
        ids = []
        for args in calls:
            job_id = str(uuid4())
            pipeline.hset(Job.key_for(job_id), mapping=self.hash_of(args, moment))
            pipeline.rpush(self._queue_key, job_id)
            ids.append(job_id)
        return ids

"""The store's annotation queues and their items."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import replace

from sandbox.langfuse.common import (
    QUEUE_ITEM_STATUSES,
    QUEUE_OBJECT_TYPES,
    BadRequest,
    NotAllowed,
    NotFound,
)
from sandbox.langfuse.records import (
    AnnotationQueueRecord,
    QueueItemRecord,
)
from sandbox.langfuse.store_base import (
    StoreBase,
)


class QueueStore(StoreBase):
    """Annotation queues and their items."""

    # ----------------------------------------------------------- annotation queues

    def create_annotation_queue(
        self, *, name: str, score_config_ids: Iterable[str], description: str | None = None
    ) -> AnnotationQueueRecord:
        """A new queue. BadRequest if the project has a queue of that name or a score config id
        is unknown; NotAllowed beyond ``max_annotation_queues``."""
        config_ids = list(score_config_ids)
        if not config_ids:
            raise BadRequest("scoreConfigIds must hold at least one score config id")
        with self._lock:
            if (
                self.max_annotation_queues is not None
                and len(self._queues) >= self.max_annotation_queues
            ):
                raise NotAllowed("Maximum number of annotation queues reached on Hobby plan.")
            if any(cid not in self._score_configs for cid in config_ids):
                raise BadRequest(
                    "At least one of the score config IDs cannot be found for the given project.",
                    error="InvalidRequestError",
                )
            if any(q.name == name for q in self._queues.values()):
                # Prisma P2002 -> InvalidRequestError (v4.16.0, web/src/features/
                # annotation-queues/server/publicAnnotationQueueService.ts)
                raise BadRequest(
                    "A queue with this name already exists.", error="InvalidRequestError"
                )
            now = self.now_ms()
            queue = AnnotationQueueRecord(
                id=str(uuid.uuid4()),
                name=name,
                score_config_ids=config_ids,
                created_ms=now,
                updated_ms=now,
                description=description,
                seq=self._next_seq(),
            )
            self._queues[queue.id] = queue
            self._queue_items[queue.id] = {}
            return replace(queue, score_config_ids=list(config_ids))

    def annotation_queue(self, queue_id: str) -> AnnotationQueueRecord | None:
        with self._lock:
            queue = self._queues.get(queue_id)
            if queue is None:
                return None
            return replace(queue, score_config_ids=list(queue.score_config_ids))

    def annotation_queues(self) -> list[AnnotationQueueRecord]:
        """Every annotation queue, oldest first (copies)."""
        with self._lock:
            return [
                replace(q, score_config_ids=list(q.score_config_ids)) for q in self._queues.values()
            ]

    def _items_of(self, queue_id: str) -> dict[str, QueueItemRecord]:
        items = self._queue_items.get(queue_id)
        if items is None:
            raise NotFound("Annotation queue not found")
        return items

    def add_queue_item(
        self, queue_id: str, *, object_id: str, object_type: str = "TRACE", status: str = "PENDING"
    ) -> QueueItemRecord:
        """Queue an object (no de-duplication: queueing it again adds another item)."""
        if object_type not in QUEUE_OBJECT_TYPES:
            raise BadRequest(f"objectType must be one of {sorted(QUEUE_OBJECT_TYPES)}")
        if status not in QUEUE_ITEM_STATUSES:
            raise BadRequest(f"status must be one of {sorted(QUEUE_ITEM_STATUSES)}")
        with self._lock:
            items = self._items_of(queue_id)
            now = self.now_ms()
            item = QueueItemRecord(
                id=str(uuid.uuid4()),
                queue_id=queue_id,
                object_id=object_id,
                object_type=object_type,
                status=status,
                created_ms=now,
                updated_ms=now,
                completed_ms=now if status == "COMPLETED" else None,
                seq=self._next_seq(),
            )
            items[item.id] = item
            return replace(item)

    def queue_items(self, queue_id: str) -> list[QueueItemRecord]:
        """The items of a queue, oldest first (copies); [] for an unknown queue."""
        with self._lock:
            return [replace(i) for i in self._queue_items.get(queue_id, {}).values()]

    def queue_item(self, queue_id: str, item_id: str) -> QueueItemRecord:
        """One item (NotFound for an unknown queue or item)."""
        with self._lock:
            item = self._items_of(queue_id).get(item_id)
            if item is None:
                raise NotFound("Annotation queue item not found")
            return replace(item)

    def update_queue_item(
        self, queue_id: str, item_id: str, *, status: str | None = None
    ) -> QueueItemRecord:
        """Set the status; COMPLETED stamps ``completedAt`` (PENDING leaves it, as Langfuse)."""
        if status is not None and status not in QUEUE_ITEM_STATUSES:
            raise BadRequest(f"status must be one of {sorted(QUEUE_ITEM_STATUSES)}")
        with self._lock:
            items = self._items_of(queue_id)
            item = items.get(item_id)
            if item is None:
                raise NotFound("Annotation queue item not found")
            now = self.now_ms()
            new = replace(
                item,
                status=status or item.status,
                completed_ms=now if status == "COMPLETED" else item.completed_ms,
                updated_ms=now,
            )
            items[item_id] = new
            return replace(new)

    def delete_queue_item(self, queue_id: str, item_id: str) -> None:
        with self._lock:
            items = self._items_of(queue_id)
            if items.pop(item_id, None) is None:
                raise NotFound("Annotation queue item not found")

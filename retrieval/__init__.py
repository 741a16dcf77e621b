"""lamsc.retrieval: knowledge bases at the receiver, local (this link's) and global (shared across devices).

Entries of a semantic key (lamsc.retrieval.keys) and the image it stands for, faiss-indexed
(lamsc.retrieval.index), kept in a folder with a hashed manifest (lamsc.retrieval.base) and merged by a stated
policy (lamsc.retrieval.merge). At the receiver a ``Retriever`` (lamsc.retrieval.refine), passed as the
Receiver's ``refine``, registers the nearest entries onto what was decoded (lamsc.retrieval.align) and fuses
the best one in with a small network (lamsc.retrieval.fusion, trained by lamsc.retrieval.training with the codec
frozen). Scene sequences of real photographs: lamsc.retrieval.scenes; the gain against SNR:
lamsc.retrieval.sweep; what ``lamsc kb`` does: lamsc.retrieval.jobs.
"""

from lamsc.lazy import lazy_exports

_EXPORTS = {
    "KnowledgeBase": "base", "FusionConfig": "fusion", "FusionNet": "fusion", "BaseInfo": "jobs",
    "BuildConfig": "jobs", "MergeConfig": "jobs", "QueryConfig": "jobs", "add_to_base": "jobs", "base_info": "jobs",
    "build_base": "jobs", "merge_bases": "jobs", "query_bases": "jobs", "MergePolicy": "merge", "merge": "merge",
    "Retriever": "refine",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)

"""lamsc.retrieval: knowledge bases at the receiver, local (this link's) and global (shared across devices).

Entries of a semantic key (lamsc.retrieval.keys) and the image it stands for, faiss-indexed
(lamsc.retrieval.index), kept in a folder with a hashed manifest (lamsc.retrieval.base) and merged by a stated
policy (lamsc.retrieval.merge). At the receiver a ``Retriever`` (lamsc.retrieval.refine), passed as the
Receiver's ``refine``, registers the nearest entries onto what was decoded (lamsc.retrieval.align) and fuses
the best one in with a small network (lamsc.retrieval.fusion, trained by lamsc.retrieval.training with the codec
frozen). Scene sequences of real photographs: lamsc.retrieval.scenes; the gain against SNR:
lamsc.retrieval.sweep; what ``lamsc kb`` does: lamsc.retrieval.jobs.
"""

from lamsc.retrieval.base import KnowledgeBase
from lamsc.retrieval.fusion import FusionConfig, FusionNet
from lamsc.retrieval.jobs import (BaseInfo, BuildConfig, MergeConfig, QueryConfig, add_to_base, base_info, build_base,
                                  merge_bases, query_bases)
from lamsc.retrieval.merge import MergePolicy, merge
from lamsc.retrieval.refine import Retriever

__all__ = [
    "BaseInfo",
    "BuildConfig",
    "FusionConfig",
    "FusionNet",
    "KnowledgeBase",
    "MergeConfig",
    "MergePolicy",
    "QueryConfig",
    "Retriever",
    "add_to_base",
    "base_info",
    "build_base",
    "merge",
    "merge_bases",
    "query_bases",
]

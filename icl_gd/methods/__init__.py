"""Methods: how a model answers the queries given the demonstrations (DESIGN.md, "Shape").

zeroshot: the query alone. icl: the demos in the prompt. gd: fine-tune on the demos, then the query alone.
lora: as gd with a LoRA adapter. gd_search: a grid of GD settings scored
along their trajectories on selection queries, the best one answering the test queries. Each is one module with one registered `Method` subclass and returns the same
`MethodOutput`, so metrics and comparisons never branch. Importing this package registers the built-in methods.
"""

from icl_gd.methods.base import Method, MethodInputs, MethodOutput
from icl_gd.methods.gd import GD
from icl_gd.methods.gd_search import GDSearch
from icl_gd.methods.icl import ICL
from icl_gd.methods.lora import LoRA
from icl_gd.methods.registry import METHODS, method_class, register
from icl_gd.methods.zeroshot import ZeroShot

__all__ = [
    "GD",
    "GDSearch",
    "ICL",
    "METHODS",
    "LoRA",
    "Method",
    "MethodInputs",
    "MethodOutput",
    "ZeroShot",
    "method_class",
    "register",
]

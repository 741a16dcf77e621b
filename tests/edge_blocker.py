"""``python tests/edge_blocker.py ARGS...``: the ``lamsc`` command with the full toolkit's packages made
unimportable, as in an install of ``lamsc[edge]`` alone. Prints ``imported: [...]`` on stderr, the blocked
packages the command's run tried to import, and exits with lamsc's status."""

import importlib.abc
import sys

BLOCKED = ("torch", "torchvision", "segment_anything", "mobile_sam", "timm", "cv2", "sionna", "torch_pruning",
           "nncf", "faiss", "pytorch_msssim", "flwr", "tensorflow")
tried = set()


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        root = name.split(".")[0]
        if root in BLOCKED:
            tried.add(root)
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


if __name__ == "__main__":
    sys.meta_path.insert(0, Blocker())
    from lamsc.cli import main

    status = main(sys.argv[1:])
    print(f"imported: {sorted(tried)}", file=sys.stderr)
    sys.exit(status)

"""DIV2K (or any HR folder) -> sub-images -> LMDBs for BasicSR training. See basicsr_taylor/prepare_data.py.

    python scripts/prepare_div2k.py --root datasets/DIV2K
    python scripts/prepare_div2k.py --hr path/to/HR --out datasets/MySet --scales 2   # LR made with MATLAB bicubic
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

import basicsr_taylor  # noqa: E402,F401  (makes basicsr importable on new torchvision)
from basicsr_taylor.prepare_data import main  # noqa: E402

if __name__ == '__main__':
    main()

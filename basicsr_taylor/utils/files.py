"""Writing files so that no file ever reads as complete while it is half-written."""
import contextlib
import csv
import io
import os
import tempfile
from os import path as osp


def default_file_mode():
    """The mode a plain open() would give a new file: 0666 minus the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path in ``path``'s folder; when the block completes, rename it over ``path``.

    On an error (or Ctrl-C) the temporary file is deleted and ``path`` is left as it was. The file gets the mode
    a plain open() would give it (mkstemp's own is 0600).
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, temp_path = tempfile.mkstemp(prefix='.' + osp.basename(path) + '.', suffix='.tmp', dir=folder)
    os.close(fd)
    try:
        yield temp_path
        os.chmod(temp_path, default_file_mode())
        os.replace(temp_path, path)  # atomic on POSIX and Windows
    finally:
        if osp.exists(temp_path):
            os.remove(temp_path)


def write_atomically(path, data):
    """Write ``data`` (str or bytes) to ``path`` through :func:`atomic_path`."""
    if isinstance(data, str):
        data = data.encode('utf-8')
    with atomic_path(path) as temp_path:
        with open(temp_path, 'wb') as f:
            f.write(data)
    return path


def write_csv_atomically(path, rows):
    """Write ``rows`` (dicts with the same keys, the first row's order giving the columns) as a CSV file with a
    header line, through :func:`atomic_path`."""
    text = io.StringIO(newline='')
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return write_atomically(path, text.getvalue())

"""Small helpers shared by the unit tests."""

import os


def snapshot(*roots):
    """Every path under ``roots`` with its mode and content, to compare
    before and after an operation that must change nothing."""
    seen = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                content = None
                if os.path.isfile(path):
                    with open(path, 'rb') as f:
                        content = f.read()
                seen[path] = (st.st_mode, st.st_uid, st.st_gid, content)
            seen[dirpath] = (os.lstat(dirpath).st_mode, None, None, None)
    return seen

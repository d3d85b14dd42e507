"""The fixture example in README.rst runs as written."""

import os
import re

README = os.path.join(os.path.dirname(__file__), '..', '..', 'README.rst')


def test_readme_fixture_example_passes():
    with open(README) as f:
        text = f.read()
    blocks = re.findall(r'\.\. code-block:: python\n\n((?:   .*\n|\n)+)',
                        text)
    [example] = [b for b in blocks if 'def test_' in b]
    code = '\n'.join(line[3:] for line in example.splitlines())
    namespace = {}
    exec(compile(code, 'README.rst', 'exec'), namespace)
    tests = [v for k, v in namespace.items() if k.startswith('test_')]
    assert tests
    for test in tests:
        test()

"""`schemathesis` for `scripts/python-tests`, with one work-around for CPython 3.11.

Hypothesis describes the lambdas passed to `.filter()` by parsing their source file with
`ast.parse`. On CPython 3.11 (3.11.7 here) parsing schemathesis's largest module from deep inside
its coverage phase fails with `SystemError: AST constructor recursion depth mismatch` (a CPython
bug fixed in 3.12), which aborts the operation being tested. The description is only cosmetic
(a repr), so this falls back to Hypothesis's own "unknown" form instead. Everything else is the
stock command line: `python tests/python/schemathesis_cli.py run ...`.
"""

import sys

from hypothesis.internal import lambda_sources

_describe = lambda_sources._lambda_description


def _lambda_description(f, *args, **kwargs):
    try:
        return _describe(f, *args, **kwargs)
    except SystemError:
        return "lambda: <unknown>"


lambda_sources._lambda_description = _lambda_description

from schemathesis.cli import schemathesis  # noqa: E402

if __name__ == "__main__":
    sys.exit(schemathesis())

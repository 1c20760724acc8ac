"""The curl examples of docs/http-api.md, run against a live server so that the docs cannot rot.

Every ```sh block of the document is an example. They run in document order in ONE bash session
(earlier examples create what later ones use; shell variables and files carry over), in a scratch
directory that holds the files they name (``batch.json``, ``invoice-1001.pdf``). ``curl`` is a
shell function there that calls the real curl with ``-sS`` and records, for every request, curl's
exit status, the response headers and the body (which still goes to stdout, so pipes work).

Per example:

- every command succeeds (an ``ERR`` trap records any that fails, curl's exit status included);
- every request is answered 2xx or 3xx. An example that shows an error on purpose says so in an
  HTML comment line right before the block, ``<!-- expect: 409 -->``: its last request must be
  answered with that status, as a problem document with the same ``status``;
- when the next fenced block after the example, before the next heading, is a ```json block, the
  last request's answer is JSON with at least the same top-level member names (values may differ;
  placeholder names such as ``"…"`` are ignored);
- ``<!-- expect: stream -->`` marks a Server-Sent Events example: it runs for 2 s and must have
  answered 200 ``text/event-stream`` starting with a ``retry:`` hint;
- ``<!-- expect: skip: <reason> -->`` leaves a block out (setup the test does itself, tools that
  are not assumed installed); it still counts for coverage;
- ``<!-- run: last -->`` runs a block after all the others, for an example in an introductory
  section that uses what later sections create.

Besides, every route of the router (``.route(`` calls in crates/opal-server/src/http/*.rs) must
have an example with its method and path.

Needs ``OPAL_URL`` and ``OPAL_KEY`` (``scripts/python-tests`` sets both) on a server that has none
of the docs' topics and subscriptions yet; ``curl`` and ``jq`` on the PATH. What the examples
created is deleted at the end, so the test can run again on the same server.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "http-api.md"
HTTP_SOURCES = ROOT / "crates" / "opal-server" / "src" / "http"
URL = os.environ["OPAL_URL"]
KEY = os.environ["OPAL_KEY"]

EXPECT = re.compile(r"^<!--\s*expect:\s*(.*?)\s*-->$")
RUN_LAST = re.compile(r"^<!--\s*run:\s*last\b.*-->$")
FENCE = re.compile(r"^```\s*([\w+-]*)\s*$")
HEADING = re.compile(r"^#{1,6}\s")
# Members of an example answer that only stand for "and so on".
PLACEHOLDER = re.compile(r"^[.…]+$")


@dataclass
class Example:
    index: int
    line: int  # 1-based line of the opening fence
    code: str
    expect: str = ""  # "" (2xx/3xx), a status such as "409", "stream" or "skip: <reason>"
    last: bool = False  # runs after all the others
    answer: dict | None = None  # the ```json block shown right after it, parsed
    answer_line: int = 0
    requests: list = field(default_factory=list)  # (method, path) of each request it makes

    @property
    def label(self) -> str:
        first = " ".join(self.requests[0]) if self.requests else "setup"
        return f"L{self.line} {first}"


def parse_examples(text: str) -> list[Example]:
    lines = text.splitlines()
    examples = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        if opening.group(1) == "sh":
            example = Example(len(examples), i + 1, "\n".join(lines[i + 1 : end]))
            before = i - 1
            while before >= 0 and (
                not lines[before].strip() or lines[before].startswith("<!--")
            ):
                if marker := EXPECT.match(lines[before].strip()):
                    example.expect = marker.group(1)
                example.last |= RUN_LAST.match(lines[before].strip()) is not None
                before -= 1
            after = end + 1
            while after < len(lines) and not (
                FENCE.match(lines[after]) or HEADING.match(lines[after])
            ):
                after += 1
            if after < len(lines) and (shown := FENCE.match(lines[after])):
                if shown.group(1) == "json":
                    close = after + 1
                    while not lines[close].startswith("```"):
                        close += 1
                    example.answer = json.loads("\n".join(lines[after + 1 : close]))
                    example.answer_line = after + 1
            example.requests = requests_of(example.code)
            examples.append(example)
        i = end + 1
    return examples


def requests_of(code: str) -> list[tuple[str, str]]:
    """(method, path) of every curl or websocat command in a block, in order."""
    requests = []
    lexer = shlex.shlex(separate_commands(code), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    for start, token in enumerate(tokens):
        if token not in ("curl", "websocat"):
            continue
        command = []
        for word in tokens[start + 1 :]:
            if word in ("|", "||", "&&", ";", "(", ")"):
                break
            command.append(word)
        method, path = None, None
        for j, word in enumerate(command):
            if re.fullmatch(r"-[a-zA-Z]*X|--request", word) and j + 1 < len(command):
                method = command[j + 1]
            if url := re.match(r"(?:\$OPAL_URL|(?:https?|wss?)://[^/]+)(/[^?#]*)", word):
                path = url.group(1)
        if path is None:
            continue
        if method is None:
            data = {"-d", "--data", "--data-binary", "--data-raw", "--json", "-F"}
            method = "POST" if token == "curl" and data & set(command) else "GET"
        requests.append((method.upper(), path))
    return requests


def separate_commands(code: str) -> str:
    """The block with line continuations joined, comments dropped and every other newline
    outside quotes turned into `;`, so that the lexer sees where each command ends."""
    out, quote, i = [], None, 0
    while i < len(code):
        c = code[i]
        if quote:
            if c == quote:
                quote = None
            elif c == "\\" and quote == '"':
                out.append(c)
                i += 1
                c = code[i]
        elif c in "'\"":
            quote = c
        elif c == "\\" and code[i + 1 : i + 2] == "\n":
            c = " "
            i += 1
        elif c == "#" and (not out or out[-1][-1] in " \t"):
            while i < len(code) and code[i] != "\n":
                i += 1
            continue
        elif c == "\n":
            c = " ; "
        out.append(c)
        i += 1
    return "".join(out)


def router_operations() -> set[tuple[str, str]]:
    """(method, path template) of every route the HTTP router declares."""
    operations = set()
    for source in sorted(HTTP_SOURCES.glob("*.rs")):
        text = source.read_text()
        for found in re.finditer(r"\.route\(\s*\"([^\"]+)\"\s*,", text):
            depth, j = 1, found.end()
            while depth:
                depth += {"(": 1, ")": -1}.get(text[j], 0)
                j += 1
            handlers = text[found.end() : j - 1]
            for method in re.findall(r"(?<![\w:])(get|put|post|patch|delete)\(", handlers):
                operations.add((method.upper(), found.group(1)))
    return operations


def template_matches(template: str, path: str) -> bool:
    pattern = re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template))
    return re.fullmatch(pattern, path) is not None


EXAMPLES = parse_examples(DOC.read_text())


def created(kind: str) -> list[str]:
    """Names of the topics or subscriptions the examples create (`PUT /v1/<kind>/<name>`)."""
    names = []
    for example in EXAMPLES:
        for method, path in example.requests:
            found = re.fullmatch(rf"/v1/{kind}/([^/]+)", path)
            if method == "PUT" and found and found.group(1) not in names:
                names.append(found.group(1))
    return names


SESSION_PRELUDE = r"""
set -o pipefail
# Any command that fails is recorded with its example, and the session goes on.
__docs_failed() { printf '%s\t%s\t%s\n' "$__docs_block" "$1" "$2" >>"$__docs_dir/errors"; }
trap '__docs_failed "$?" "$BASH_COMMAND"' ERR
# Records every request: curl's exit status, the response headers and the body (which still goes
# to stdout, or where the example's `-o` says). A stream example runs for 2 s: its timeout (28) is
# how it is meant to end.
curl() {
    local f="$__docs_dir/calls/$__docs_block.${EPOCHREALTIME//[.,]/}.$BASHPID" rc arg prev=
    # `-d @file` of a file that is not there: curl (with -s) would post an empty body silently.
    for arg in "$@"; do
        case "$prev:$arg" in
            -d:@- | --data*:@- | --json:@-) ;;
            -d:@* | --data*:@* | --json:@*)
                if [ ! -r "${arg#@}" ]; then
                    echo "no file ${arg#@} to send" | tee "$f.err" >&2
                    echo 26 >"$f.rc"
                    return 26
                fi ;;
        esac
        prev=$arg
    done
    command curl -sS --max-time "$__docs_max_time" -D "$f.head" "$@" 2>"$f.err" | tee "$f.body"
    rc=${PIPESTATUS[0]}
    printf '%s\n' "$rc" >"$f.rc"
    cat "$f.err" >&2
    if [ -n "$__docs_stream" ] && [ "$rc" = 28 ]; then return 0; fi
    return "$rc"
}
"""


@dataclass
class Call:
    rc: int
    status: int
    content_type: str
    body: bytes
    err: str


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """Runs every example once, in order, in one bash session; returns what each did."""
    for tool in ("curl", "jq"):
        if shutil.which(tool) is None:
            pytest.fail(f"the docs examples need `{tool}` on the PATH")
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=URL, headers=headers, timeout=15.0) as client:
        # Subscriptions first when deleting: they keep their topics from being deleted.
        resources = [f"/v1/subscriptions/{name}" for name in created("subscriptions")]
        resources += [f"/v1/topics/{name}" for name in created("topics")]
        for resource in resources:
            if client.get(resource).status_code != 404:
                pytest.fail(f"{resource} exists already: run on a server without it")
        try:
            yield run_session(tmp_path_factory.mktemp("docs"))
        finally:
            for resource in resources:
                client.delete(resource)


def run_session(tmp: Path) -> dict:
    work, record = tmp / "work", tmp / "record"
    work.mkdir()
    (record / "calls").mkdir(parents=True)
    # Files the examples publish (the reader has their own).
    (work / "batch.json").write_text('{"messages": [{"data": {"order": 44}, "key": "customer-9"}]}')
    (work / "invoice-1001.pdf").write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n%%EOF\n")
    script = [SESSION_PRELUDE, f"__docs_dir={shlex.quote(str(record))}"]
    for example in sorted(EXAMPLES, key=lambda e: e.last):
        if example.expect.startswith("skip"):
            continue
        stream = example.expect == "stream"
        script.append(
            f"\n# ---- example {example.index} (docs/http-api.md:{example.line})\n"
            f"__docs_block={example.index} __docs_stream={'1' if stream else ''} "
            f"__docs_max_time={2 if stream else 60}\n"
            f"{example.code}\n"
            f'printf "%s\\n" "$__docs_block" >>"$__docs_dir/done"\n'
        )
    (record / "session.sh").write_text("".join(script))
    env = dict(os.environ, OPAL_URL=URL, OPAL_KEY=KEY)
    ran = subprocess.run(
        ["bash", str(record / "session.sh")],
        cwd=work,
        env=env,
        capture_output=True,
        timeout=600,
    )
    errors: dict[int, list[str]] = {}
    if (record / "errors").exists():
        for row in (record / "errors").read_text().splitlines():
            block, rc, command = row.split("\t", 2)
            errors.setdefault(int(block), []).append(f"exit {rc}: {command}")
    done = set()
    if (record / "done").exists():
        done = {int(n) for n in (record / "done").read_text().split()}
    calls: dict[int, list[Call]] = {}
    rcs = sorted(
        (record / "calls").glob("*.rc"),
        key=lambda p: tuple(int(part) for part in p.name.split(".")[:2]),
    )
    for rc in rcs:
        status, content_type = 0, ""
        head = rc.with_suffix(".head")
        # The last response's status line and Content-Type (after a `100 Continue`, say).
        for line in head.read_text(errors="replace").splitlines() if head.exists() else []:
            if found := re.match(r"HTTP/[\d.]+ (\d{3})", line):
                status, content_type = int(found.group(1)), ""
            elif line.lower().startswith("content-type:"):
                content_type = line.split(":", 1)[1].strip()
        body, err = rc.with_suffix(".body"), rc.with_suffix(".err")
        calls.setdefault(int(rc.name.split(".")[0]), []).append(
            Call(
                int(rc.read_text()),
                status,
                content_type,
                body.read_bytes() if body.exists() else b"",
                err.read_text(errors="replace").strip() if err.exists() else "",
            )
        )
    return {
        "errors": errors,
        "done": done,
        "calls": calls,
        "output": ran.stdout.decode(errors="replace") + ran.stderr.decode(errors="replace"),
    }


def describe(call: Call) -> str:
    said = f" {call.err}" if call.err else ""
    body = call.body[:600].decode(errors="replace")
    return f"HTTP {call.status} (curl exit {call.rc}{said}): {body}"


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.label for e in EXAMPLES])
def test_example(session, example):
    if example.expect.startswith("skip"):
        reason = example.expect.partition(":")[2].strip()
        assert reason, f"docs/http-api.md:{example.line}: say why the example is skipped"
        pytest.skip(reason)
    where = f"docs/http-api.md:{example.line}"
    assert example.index in session["done"], (
        f"{where}: the session did not get past this example\n{session['output'][-3000:]}"
    )
    calls = session["calls"].get(example.index, [])
    assert calls, f"{where}: the example made no request"
    last = calls[-1]
    for call in calls[:-1]:
        assert call.rc == 0 and 200 <= call.status < 400, f"{where}: {describe(call)}"
    if example.expect != "stream":
        assert last.rc == 0, f"{where}: {describe(last)}"
    # Commands other than curl (jq, say).
    assert not session["errors"].get(example.index), (
        f"{where}: a command failed: {session['errors'][example.index]}"
    )

    if example.expect == "stream":
        assert last.rc == 28, f"{where}: the stream ended by itself: {describe(last)}"
        assert last.status == 200, f"{where}: {describe(last)}"
        assert last.content_type.startswith("text/event-stream"), last.content_type
        assert last.body.startswith(b"retry: "), f"{where}: {describe(last)}"
        # Each delivery's event id is its ack id, and its data a pull's delivery.
        for event in last.body.decode().split("\n\n"):
            fields = dict(line.split(": ", 1) for line in event.splitlines() if ": " in line)
            if fields.get("event") == "delivery":
                delivery = json.loads(fields["data"])
                assert fields.get("id") == delivery["ack_id"], f"{where}: {event}"
                assert {"ack_id", "attempt", "message"} <= set(delivery), f"{where}: {event}"
        return
    if example.expect:
        expected = int(example.expect)
        assert last.status == expected, f"{where}: expected {expected}, got {describe(last)}"
        assert last.content_type == "application/problem+json", last.content_type
        problem = json.loads(last.body)
        assert problem.get("status") == expected, f"{where}: {describe(last)}"
    else:
        assert 200 <= last.status < 400, f"{where}: {describe(last)}"

    if example.answer is not None:
        try:
            answer = json.loads(last.body)
        except ValueError:
            pytest.fail(f"{where}: the answer is not JSON: {describe(last)}")
        shown = {name for name in example.answer if not PLACEHOLDER.match(name)}
        assert isinstance(answer, dict), f"{where}: {describe(last)}"
        missing = shown - set(answer)
        assert not missing, (
            f"{where}: the answer lacks {sorted(missing)} that docs/http-api.md:"
            f"{example.answer_line} shows: {describe(last)}"
        )


def test_every_route_has_an_example():
    documented = [request for example in EXAMPLES for request in example.requests]
    missing = sorted(
        f"{method} {template}"
        for method, template in router_operations()
        if not any(
            method == m and template_matches(template, path) for m, path in documented
        )
    )
    assert not missing, f"routes without a curl example in docs/http-api.md: {missing}"


def test_the_examples_are_found():
    """Guards the parser: a change of the document's fences must not silently drop examples."""
    assert len(EXAMPLES) >= 30
    assert router_operations() >= {("PUT", "/v1/topics/{topic}"), ("GET", "/readyz")}

"""Which URIs a resource template describes (a read that only a hidden template describes is
refused): the linear matcher agrees with a regular-expression reading of RFC 6570 on any short
template and URI, and an upstream's template cannot make matching backtrack."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.pinning import uri_matches

_EXPRESSION = re.compile(r"\{([+#./;?&]?)([^{}]*)\}")


def reference(template: str, uri: str) -> bool:
    """The same reading as a regular expression (fine for short inputs: it may backtrack)."""
    out, at = [], 0
    for match in _EXPRESSION.finditer(template):
        out.append(re.escape(template[at : match.start()]))
        op = match.group(1)
        out.append("[^/?#]*" if op == "" else ".*" if op == "#" else "[^#]*")
        at = match.end()
    rest = template[at:]
    if "{" in rest or "}" in rest:
        return True
    out.append(re.escape(rest))
    return re.fullmatch("".join(out), uri, re.DOTALL) is not None


pieces = st.sampled_from(["a", "/", "?", "#", "-", ".", "{x}", "{+x}", "{#x}", "{?x,y}", "{/x}", "{.x}", "{", "}"])
uris = st.text(alphabet="a/?#-.=&", max_size=12)


@settings(max_examples=2000)
@given(st.lists(pieces, max_size=6).map("".join), uris)
def test_the_matcher_reads_templates_as_the_reference_does(template: str, uri: str) -> None:
    assert uri_matches(template, uri) == reference(template, uri)


def test_a_template_built_to_backtrack_is_matched_in_one_sweep() -> None:
    # As a regular expression this is 40 nested stars against 8000 dashes: it would never finish.
    assert not uri_matches("{a}-" * 40 + "x", "-" * 8000)
    assert uri_matches("{a}-" * 40 + "x", "-" * 40 + "x")


def test_templates_and_uris_of_an_upstream() -> None:
    assert uri_matches("note://{id}", "note://3")
    assert not uri_matches("note://{id}", "note://3/4")
    assert uri_matches("file:///{+path}", "file:///a/b/c")
    assert uri_matches("sms://{id}{?fields}", "sms://7?fields=text")
    assert not uri_matches("note://{id}", "other://3")
    assert uri_matches("broken{", "anything")  # unreadable: taken to describe every URI

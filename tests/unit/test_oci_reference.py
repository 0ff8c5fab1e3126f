"""Image references from a library volume's registry, package and version attributes."""

from __future__ import annotations

import pytest

from csi_driver.oci.reference import ImageReference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(("registry", "package", "version", "expected"), [
    ("gcr.io/datadoghq", "dd-lib-java-init", "v1",
     ("gcr.io", "datadoghq/dd-lib-java-init", "v1", None)),
    ("gcr.io/datadoghq", "dd-lib-java-init", DIGEST,
     ("gcr.io", "datadoghq/dd-lib-java-init", None, DIGEST)),
    ("gcr.io/datadoghq", "dd-lib-java-init", f"1.2.3@{DIGEST}",
     ("gcr.io", "datadoghq/dd-lib-java-init", "1.2.3", DIGEST)),
    ("public.ecr.aws/datadog/sub", "apm-inject", "latest",
     ("public.ecr.aws", "datadog/sub/apm-inject", "latest", None)),
    ("GCR.IO/datadoghq", "apm-inject", "0", ("gcr.io", "datadoghq/apm-inject", "0", None)),
    ("localhost:5000", "apm-inject", "v1", ("localhost:5000", "apm-inject", "v1", None)),
    ("127.0.0.1:5000/team", "lib", "v1", ("127.0.0.1:5000", "team/lib", "v1", None)),
    ("[::1]:5000", "lib", "v1", ("[::1]:5000", "lib", "v1", None)),
    ("registry.example.com", "a/b", "V_1.x-y", ("registry.example.com", "a/b", "V_1.x-y", None)),
    # Docker Hub, the way `docker pull` reads a name without a host.
    ("datadog", "dd-lib-js-init", "v5", ("docker.io", "datadog/dd-lib-js-init", "v5", None)),
    ("docker.io", "busybox", "1", ("docker.io", "library/busybox", "1", None)),
    ("  gcr.io/datadoghq ", "apm-inject", " v1 ", ("gcr.io", "datadoghq/apm-inject", "v1", None)),
])
def test_attributes_become_a_reference(registry: str, package: str, version: str,
                                       expected: tuple[str, str, str | None, str | None]) -> None:
    ref = ImageReference.from_attributes(registry, package, version)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == expected


@pytest.mark.parametrize(("registry", "package", "version", "complaint"), [
    ("", "lib", "v1", "registry is empty"),
    ("https://gcr.io/datadoghq", "lib", "v1", "must not include a scheme"),
    ("gcr.io/datadoghq/", "lib", "v1", "ends with '/'"),
    ("gcr.io//datadoghq", "lib", "v1", "not a valid repository path"),
    ("gcr.io/DataDog", "lib", "v1", "not a valid repository path"),
    ("gcr.io:99999/x", "lib", "v1", "outside 1-65535"),
    ("gcr.io:port/x", "lib", "v1", "not a valid host name"),
    ("-bad.io/x", "lib", "v1", "not a valid host name"),
    ("user@gcr.io/x", "lib", "v1", "not a valid host name"),
    ("gcr.io/datadoghq", "", "v1", "package is empty"),
    ("gcr.io/datadoghq", "../etc", "v1", "not a valid repository path"),
    ("gcr.io/datadoghq", "lib?x=1", "v1", "not a valid repository path"),
    ("gcr.io/datadoghq", "lib", "", "version is empty"),
    ("gcr.io/datadoghq", "lib", "-v1", "not a valid tag"),
    ("gcr.io/datadoghq", "lib", "v" * 129, "not a valid tag"),
    ("gcr.io/datadoghq", "lib", "v1/../x", "not a valid tag"),
    ("gcr.io/datadoghq", "lib", "sha256:abc", "not a valid digest"),
    ("gcr.io/datadoghq", "lib", "sha256:" + "AB" * 32, "not a valid digest"),
    ("gcr.io/datadoghq", "lib", "sha512:" + "ab" * 64, "not a valid tag"),
    ("gcr.io/datadoghq", "lib", f"v1@sha512:{'ab' * 64}", "not a valid digest"),
    ("gcr.io/datadoghq", "lib", f"@{DIGEST}", "nothing before '@'"),
    ("gcr.io/" + "a" * 250, "library", "v1", "longer than 255"),
])
def test_bad_attributes_are_refused_with_what_to_fix(registry: str, package: str, version: str,
                                                     complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint.replace("?", r"\?").replace("(", r"\(")):
        ImageReference.from_attributes(registry, package, version)


def test_canonical_form_names_registry_repository_tag_and_digest() -> None:
    assert str(ImageReference.from_attributes("gcr.io/datadoghq", "lib", "v1")) == "gcr.io/datadoghq/lib:v1"
    assert str(ImageReference.from_attributes("gcr.io/datadoghq", "lib", DIGEST)) == f"gcr.io/datadoghq/lib@{DIGEST}"
    both = ImageReference.from_attributes("gcr.io/datadoghq", "lib", f"v1@{DIGEST}")
    assert str(both) == f"gcr.io/datadoghq/lib:v1@{DIGEST}"


def test_the_digest_is_what_the_registry_is_asked_for_when_there_is_one() -> None:
    assert ImageReference.from_attributes("gcr.io/x", "lib", f"v1@{DIGEST}").manifest_reference == DIGEST
    assert ImageReference.from_attributes("gcr.io/x", "lib", "v1").manifest_reference == "v1"


def test_references_built_directly_are_checked_too() -> None:
    with pytest.raises(ValueError, match="needs a tag or a digest"):
        ImageReference("gcr.io", "x/lib", None, None)
    with pytest.raises(ValueError, match="must be lowercase"):
        ImageReference("GCR.io", "x/lib", "v1", None)
    with pytest.raises(ValueError, match="not a valid repository path"):
        ImageReference("gcr.io", "x/../lib", "v1", None)


def test_references_are_values() -> None:
    a = ImageReference.from_attributes("gcr.io/datadoghq", "lib", "v1")
    assert a == ImageReference("gcr.io", "datadoghq/lib", "v1", None)
    assert len({a, ImageReference("gcr.io", "datadoghq/lib", "v1", None)}) == 1

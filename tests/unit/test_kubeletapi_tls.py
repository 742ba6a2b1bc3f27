"""The kubelet API's serving certificate and TLS context (minikubelet/server/kubeletapi/tls.py)."""

from __future__ import annotations

import datetime
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from minikubelet.server.kubeletapi.tls import (
    ensure_serving_certificate,
    server_ssl_context,
    serving_names,
)


def _sans(path: Path) -> tuple[set[str], set[str]]:
    cert = x509.load_pem_x509_certificates(path.read_bytes())[0]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName)), {
        str(ip) for ip in san.get_values_for_type(x509.IPAddress)
    }


def test_names_are_node_host_ips_and_loopback_once() -> None:
    assert serving_names("n1", "host", ["10.0.0.5", "127.0.0.1"]) == [
        "n1",
        "host",
        "10.0.0.5",
        "127.0.0.1",
    ]
    assert serving_names("host", "host", []) == ["host", "127.0.0.1"]


def test_generated_certificate_names_the_node_and_is_private(tmp_path: Path) -> None:
    got = ensure_serving_certificate(
        tmp_path, node_name="n1", hostname="host", node_ips=["10.0.0.5", "fd00::5"]
    )
    assert got.generated
    assert got.cert_file == tmp_path / "pki" / "kubelet.crt"
    assert got.key_file == tmp_path / "pki" / "kubelet.key"
    assert stat.S_IMODE((tmp_path / "pki").stat().st_mode) == 0o700
    assert stat.S_IMODE(got.cert_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(got.key_file.stat().st_mode) == 0o600
    dns, ips = _sans(got.cert_file)
    assert dns == {"n1", "host"}
    assert ips == {"10.0.0.5", "fd00::5", "127.0.0.1"}
    chain = x509.load_pem_x509_certificates(got.cert_file.read_bytes())
    assert len(chain) == 2  # the serving certificate, then the CA that signed it
    assert chain[0].issuer == chain[1].subject
    assert chain[1].subject.rfc4514_string().startswith("CN=host-ca@")
    context = server_ssl_context(got.cert_file, got.key_file)
    assert context.verify_mode == ssl.CERT_NONE


def test_kept_while_valid_and_remade_for_a_new_ip_or_near_its_end(tmp_path: Path) -> None:
    first = ensure_serving_certificate(
        tmp_path, node_name="n1", hostname="h", node_ips=["10.0.0.5"]
    )
    pem = first.cert_file.read_bytes()
    again = ensure_serving_certificate(
        tmp_path, node_name="n1", hostname="h", node_ips=["10.0.0.5"]
    )
    assert again.cert_file.read_bytes() == pem
    moved = ensure_serving_certificate(
        tmp_path, node_name="n1", hostname="h", node_ips=["10.0.0.6"]
    )
    assert moved.cert_file.read_bytes() != pem
    assert "10.0.0.6" in _sans(moved.cert_file)[1]
    pem = moved.cert_file.read_bytes()
    late = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=365)
    old = ensure_serving_certificate(
        tmp_path, node_name="n1", hostname="h", node_ips=["10.0.0.6"], now=late
    )
    assert old.cert_file.read_bytes() != pem


def test_the_operators_pair_is_used_as_given(tmp_path: Path) -> None:
    crt, key = tmp_path / "my.crt", tmp_path / "my.key"
    got = ensure_serving_certificate(
        tmp_path, node_name="n1", hostname="h", tls_cert_file=crt, tls_private_key_file=key
    )
    assert (got.cert_file, got.key_file, got.generated) == (crt, key, False)
    assert not (tmp_path / "pki").exists()
    with pytest.raises(ValueError):
        ensure_serving_certificate(tmp_path, node_name="n1", hostname="h", tls_cert_file=crt)


def test_a_client_ca_makes_client_certificates_requested_and_verified(tmp_path: Path) -> None:
    got = ensure_serving_certificate(tmp_path, node_name="n1", hostname="h")
    chain = x509.load_pem_x509_certificates(got.cert_file.read_bytes())
    ca = tmp_path / "ca.crt"
    ca.write_bytes(chain[1].public_bytes(serialization.Encoding.PEM))
    context = server_ssl_context(got.cert_file, got.key_file, client_ca_file=ca)
    assert context.verify_mode == ssl.CERT_OPTIONAL
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2

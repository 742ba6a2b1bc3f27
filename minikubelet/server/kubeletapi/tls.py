"""The kubelet's serving certificate and the TLS context of its HTTPS API.

With ``--tls-cert-file``/``--tls-private-key-file`` the operator's pair is used as
it is. Without them the kubelet makes its own, as ``cert.GenerateSelfSignedCertKey``
does: a CA ``HOST-ca@TIMESTAMP`` that signs a serving certificate for the node's
names and IPs (and 127.0.0.1), valid one year, kept as ``<root>/pki/kubelet.crt``
(the serving certificate, then the CA) and ``<root>/pki/kubelet.key``. The files are
0600 in a 0700 directory. A pair left by an earlier start is reused while it is
valid for at least another day and names every name and IP asked for; otherwise a
new one replaces it (a node whose IP changed gets a certificate for its new IP).

Client certificates are requested, not required: a request without one may still
come with a bearer token. When one is presented it must chain to
``--client-ca-file`` (and be meant for client authentication) or the handshake
fails; the verified certificate is what :mod:`.auth` reads the user from.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from minikubelet.bootstrap.identity import write_private

#: How long a generated certificate is valid, as the kubelet's (one year).
VALIDITY: Final = datetime.timedelta(days=365)
#: A kept certificate closer than this to its end is made again.
RENEW_BEFORE: Final = datetime.timedelta(days=1)
CERT_NAME: Final = "kubelet.crt"
KEY_NAME: Final = "kubelet.key"


@dataclass(frozen=True)
class ServingCertificate:
    cert_file: Path
    key_file: Path
    generated: bool  # made by the kubelet (now or on an earlier start)


def split_names(
    names: Iterable[str],
) -> tuple[list[str], list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    """``names`` as DNS names and IPs, each once, empty ones left out (a certificate's
    subject alternative names)."""
    dns: list[str] = []
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for name in names:
        if not name:
            continue
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            if name not in dns:
                dns.append(name)
        else:
            if ip not in ips:
                ips.append(ip)
    return dns, ips


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def generate_self_signed(
    host: str,
    names: Sequence[str],
    *,
    now: datetime.datetime | None = None,
) -> tuple[bytes, bytes]:
    """``(certificate chain PEM, key PEM)``: a serving certificate for ``names`` (DNS
    names and IPs) signed by a fresh CA ``HOST-ca@TIMESTAMP``, as the kubelet makes it."""
    now = now or datetime.datetime.now(datetime.UTC)
    dns, ips = split_names(names)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"{host}-ca@{int(now.timestamp())}")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    alt += [x509.IPAddress(ip) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{host}@{int(now.timestamp())}"))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(
        serialization.Encoding.PEM
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return chain, key_pem


def certificate_covers(
    cert_pem: bytes, names: Sequence[str], *, now: datetime.datetime | None = None
) -> bool:
    """Whether the first certificate in ``cert_pem`` is valid for a while yet and names
    every DNS name and IP of ``names``."""
    now = now or datetime.datetime.now(datetime.UTC)
    try:
        cert = x509.load_pem_x509_certificates(cert_pem)[0]
    except (ValueError, IndexError):
        return False
    if cert.not_valid_before_utc > now or cert.not_valid_after_utc - RENEW_BEFORE < now:
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    dns, ips = split_names(names)
    return set(dns) <= set(san.get_values_for_type(x509.DNSName)) and set(ips) <= set(
        san.get_values_for_type(x509.IPAddress)
    )


def serving_names(node_name: str, hostname: str, node_ips: Iterable[str]) -> list[str]:
    """The names a generated certificate is for: the node name, the hostname, the node's
    IPs and 127.0.0.1, each once."""
    names: list[str] = []
    for name in (node_name, hostname, *node_ips, "127.0.0.1"):
        if name and name not in names:
            names.append(name)
    return names


def ensure_serving_certificate(
    root: Path,
    *,
    node_name: str,
    hostname: str,
    node_ips: Iterable[str] = (),
    tls_cert_file: Path | None = None,
    tls_private_key_file: Path | None = None,
    now: datetime.datetime | None = None,
) -> ServingCertificate:
    """The certificate to serve with: the operator's pair when both files are given,
    else ``<root>/pki/kubelet.crt|key``, kept from an earlier start when still good or
    generated now."""
    if (tls_cert_file is None) != (tls_private_key_file is None):
        raise ValueError("--tls-cert-file and --tls-private-key-file go together")
    if tls_cert_file is not None and tls_private_key_file is not None:
        return ServingCertificate(tls_cert_file, tls_private_key_file, generated=False)
    pki = root / "pki"
    pki.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(pki, 0o700)
    cert_file, key_file = pki / CERT_NAME, pki / KEY_NAME
    names = serving_names(node_name, hostname, node_ips)
    if (
        cert_file.exists()
        and key_file.exists()
        and certificate_covers(cert_file.read_bytes(), names, now=now)
    ):
        return ServingCertificate(cert_file, key_file, generated=True)
    chain, key = generate_self_signed(hostname or node_name, names, now=now)
    write_private(key_file, key)
    write_private(cert_file, chain)
    return ServingCertificate(cert_file, key_file, generated=True)


def server_ssl_context(
    cert_file: Path, key_file: Path, *, client_ca_file: Path | None = None
) -> ssl.SSLContext:
    """TLS 1.2+ for the kubelet's port. With ``client_ca_file`` a client certificate is
    requested and, when one comes, verified against it; without, none is asked for."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_file), str(key_file))
    if client_ca_file is not None:
        context.load_verify_locations(cafile=str(client_ca_file))
        context.verify_mode = ssl.CERT_OPTIONAL
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


__all__ = (
    "CERT_NAME",
    "KEY_NAME",
    "ServingCertificate",
    "certificate_covers",
    "ensure_serving_certificate",
    "generate_self_signed",
    "server_ssl_context",
    "serving_names",
    "split_names",
)

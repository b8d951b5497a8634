"""Certificates for OpenFlow over TLS between the hosts of a split topology and the controller.

Each testbed gets its own certificate authority at `up`: it signs one certificate for the
controller and one per host, and its private key is then thrown away, so nothing can be
signed later and a certificate of one testbed is worthless to another. The controller accepts
a switch connection over TLS only with a host certificate of its testbed; a host's relay
(testbed/net/ofrelay.py) accepts only the controller's. On this machine the controller's
local switches need none of this: they connect over its root-only Unix socket.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CONTROLLER_NAME = "testbed-controller"  # the name the relays check the controller's cert for
VALID_DAYS = 365


@dataclass(frozen=True)
class Credentials:
    """One party's certificate and key (PEM), and the testbed's CA certificate."""

    ca: bytes
    cert: bytes
    key: bytes

    def write(self, directory: Path, stem: str) -> tuple[Path, Path, Path]:
        """Files `ca.crt`, `<stem>.crt`, `<stem>.key` in `directory` (0700, files 0600)."""
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        out = (directory / "ca.crt", directory / f"{stem}.crt", directory / f"{stem}.key")
        for path, data in zip(out, (self.ca, self.cert, self.key), strict=True):
            path.touch(mode=0o600)
            path.write_bytes(data)
        return out


def issue(testbed: str, hosts: list[str]) -> tuple[Credentials, dict[str, Credentials]]:
    """A fresh CA for `testbed`; the controller's credentials and each host's."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"edge testbed {testbed} CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .sign(ca_key, hashes.SHA256()))
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)

    def leaf(common_name: str, usage: x509.ObjectIdentifier) -> Credentials:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                .issuer_name(ca_name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        return Credentials(ca_pem, cert.public_bytes(serialization.Encoding.PEM),
                           key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))

    controller = leaf(CONTROLLER_NAME, ExtendedKeyUsageOID.SERVER_AUTH)
    return controller, {h: leaf(f"host {h}", ExtendedKeyUsageOID.CLIENT_AUTH) for h in hosts}

-- Schema v12: a device's TLS trust setting (docs/devices.md, "HTTPS endpoints").
-- Both NULL: the system's roots. `tls_ca_certificate` is a PEM bundle of the
-- CAs the device's certificate must chain to (instead of the system's);
-- `tls_certificate_sha256` pins the device's own certificate (64 lower-case
-- hex digits). Neither is a secret.
ALTER TABLE devices ADD COLUMN tls_ca_certificate TEXT;
ALTER TABLE devices ADD COLUMN tls_certificate_sha256 TEXT;

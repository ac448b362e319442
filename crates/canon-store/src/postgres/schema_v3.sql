-- A device's TLS trust setting (SQLite schema v12; docs/devices.md, "HTTPS
-- endpoints"). Both NULL: the system's roots. `tls_ca_certificate` is a PEM
-- bundle of the CAs the device's certificate must chain to;
-- `tls_certificate_sha256` pins the device's own certificate.
ALTER TABLE devices ADD COLUMN tls_ca_certificate TEXT;
ALTER TABLE devices ADD COLUMN tls_certificate_sha256 TEXT;

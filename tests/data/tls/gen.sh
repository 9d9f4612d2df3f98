#!/usr/bin/env bash
# Regenerates the TLS test fixtures: a test CA and two server certificates it signed, for
# localhost / 127.0.0.1 (the second one stands in for a renewed certificate in the reload test).
# Valid for 100 years; test use only, never for a real server.
set -euo pipefail
cd "$(dirname "$0")"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 36500 \
    -subj "/CN=chatd test CA" -keyout ca-key.pem -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign"
for n in 1 2; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=chatd test server $n" -keyout "server$n-key.pem" -out "server$n.csr"
    openssl x509 -req -in "server$n.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
        -days 36500 -out "server$n.pem" -extfile <(printf '%s\n' \
        "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth")
    rm "server$n.csr"
done
rm -f ca-key.pem ca.srl

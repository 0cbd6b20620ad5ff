#!/bin/bash
# Container health check of the nself-realtime image: GET /health on 127.0.0.1:<port> and
# succeed only on HTTP 200. <port> is the first argument, else $REALTIME_PORT, else 4000 (the
# gateway); pass 4001 (REALTIME_CDC_HTTP_PORT) for a CDC. Uses bash's /dev/tcp, so the image
# needs no curl or wget; Docker's --timeout bounds a server that never answers.
set -eu
port="${1:-${REALTIME_PORT:-4000}}"
exec 3<>"/dev/tcp/127.0.0.1/${port}"
printf 'GET /health HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
read -r -t 5 _version status _reason <&3
[ "${status}" = "200" ]

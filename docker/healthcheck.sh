#!/bin/bash
# Container health check of the nself-realtime image: GET <path> on 127.0.0.1:<port> and
# succeed only on HTTP 200.
#
#   nself-realtime-healthcheck [port] [path]
#
# <port> is the first argument, else $REALTIME_PORT, else 4000 (the gateway); pass 4001
# (REALTIME_CDC_HTTP_PORT) for a CDC. <path> is the second argument, else /health/ready on the
# gateway (ready while NATS is connected; Postgres being down is reported, not fatal: see
# docker/README.md) and /health on a CDC. Uses bash's /dev/tcp, so the image needs no curl or
# wget; Docker's --timeout bounds a server that never answers.
set -eu
port="${1:-${REALTIME_PORT:-4000}}"
if [ "${port}" = "${REALTIME_CDC_HTTP_PORT:-4001}" ]; then
  default_path=/health
else
  default_path=/health/ready
fi
path="${2:-${default_path}}"
exec 3<>"/dev/tcp/127.0.0.1/${port}"
printf 'GET %s HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n' "${path}" >&3
read -r -t 5 _version status _reason <&3
[ "${status}" = "200" ]

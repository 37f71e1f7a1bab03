#!/bin/sh
# RABBITMQ_DEFAULT_USER / RABBITMQ_DEFAULT_PASS (as the official image reads them), allowed
# from other containers (loopback_users none), then the broker in the foreground.
set -eu
conf=/var/lib/rabbitmq/rabbitmq.conf
{
    echo "default_user = ${RABBITMQ_DEFAULT_USER:-guest}"
    echo "default_pass = ${RABBITMQ_DEFAULT_PASS:-guest}"
    echo "loopback_users = none"
    echo "listeners.tcp.default = 5672"
    echo "management.tcp.port = 15672"
} > "$conf"
export RABBITMQ_CONFIG_FILE="$conf"
exec rabbitmq-server

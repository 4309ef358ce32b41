#!/bin/sh
# RabbitMQ's entrypoint in docker-compose.yml: writes the users and permissions below from .env,
# has RabbitMQ load them at every boot (a changed password in .env applies at the next start),
# then starts the image's own entrypoint. With definitions to load, RabbitMQ creates no default
# `guest` user.
#   admin          administrator, for the management UI (published on 127.0.0.1 only).
#   outbox-relay   declares the routes (exchange, work queue and its bindings, dead-letter queue:
#                  every publisher does, so nothing is unroutable before the email-service's first
#                  start) and publishes to the exchange. Creating the work queue with its
#                  dead-letter target takes read on it and write on `amq.default` (RabbitMQ checks
#                  both when a queue with `x-dead-letter-exchange` is created), so the relay holds
#                  those too; it could read the mails' events, which it publishes anyway.
#   email-service  declares and reads its queues, publishes to them through the default exchange
#                  (retries, deferrals, dead letters) and binds its queue to the exchange.
#   webhook-service declares the exchange, its work queue (bound to the exchange) and its
#                  dead-letter queue, and reads its work queue; nothing of the email-service's.
#                  Like the relay it holds write on `amq.default` and read on its queue because
#                  the queue has a dead-letter target; the broker itself dead-letters to the DLQ.
# AMQP's permissions are three regexes over resource names (configure: declare/delete,
# write: publish/bind-to, read: consume/get/bind-from); the default exchange is `amq.default`.
# `print-definitions` as the first argument prints the definitions instead (for checking them).
set -eu

fail() { echo "rabbitmq-init: $*" >&2; exit 1; }
for variable in RABBITMQ_ADMIN_PASSWORD RABBITMQ_OUTBOX_RELAY_PASSWORD \
  RABBITMQ_EMAIL_SERVICE_PASSWORD RABBITMQ_WEBHOOK_SERVICE_PASSWORD; do
  eval "value=\${$variable:-}"
  [ -n "$value" ] || fail "$variable is not set (see .env.template)"
  # The services put theirs in an amqp:// URL, and it goes into JSON here: keep it simple.
  case "$value" in
    *[!A-Za-z0-9._~-]*) fail "$variable may only have letters, digits and . _ ~ -" ;;
  esac
done

# AMQP_NAMESPACE prefixes every name (see common/src/topology.rs); escaped for a regex, then
# for JSON.
ns=$(printf '%s' "${AMQP_NAMESPACE:-}" | sed 's/[][\\.^$*+?(){}|]/\\&/g')
exchange="${ns}signup\\.events"
queue="${ns}email-service"
email_queues="${queue}(\\.dlq|\\.defer|\\.retry\\.[0-9]+ms)?"
webhook_queue="${ns}webhook-service"
json() { printf '%s' "$1" | sed 's/\\/\\\\/g'; }

definitions() {
  cat <<JSON
{
  "vhosts": [{"name": "/"}],
  "users": [
    {"name": "admin", "password": "$RABBITMQ_ADMIN_PASSWORD", "tags": ["administrator"]},
    {"name": "outbox-relay", "password": "$RABBITMQ_OUTBOX_RELAY_PASSWORD", "tags": []},
    {"name": "email-service", "password": "$RABBITMQ_EMAIL_SERVICE_PASSWORD", "tags": []},
    {"name": "webhook-service", "password": "$RABBITMQ_WEBHOOK_SERVICE_PASSWORD", "tags": []}
  ],
  "permissions": [
    {"user": "admin", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
    {"user": "outbox-relay", "vhost": "/",
     "configure": "$(json "^($exchange|$queue|$queue\\.dlq)\$")",
     "write": "$(json "^(amq\\.default|$exchange|$queue)\$")",
     "read": "$(json "^($exchange|$queue)\$")"},
    {"user": "email-service", "vhost": "/",
     "configure": "$(json "^($exchange|$email_queues)\$")",
     "write": "$(json "^(amq\\.default|$email_queues)\$")",
     "read": "$(json "^($exchange|$email_queues)\$")"},
    {"user": "webhook-service", "vhost": "/",
     "configure": "$(json "^($exchange|$webhook_queue|$webhook_queue\\.dlq)\$")",
     "write": "$(json "^(amq\\.default|$webhook_queue)\$")",
     "read": "$(json "^($exchange|$webhook_queue)\$")"}
  ]
}
JSON
}

if [ "${1:-}" = print-definitions ]; then
  definitions
  exit 0
fi

umask 077
definitions > /etc/rabbitmq/signup-definitions.json
chown rabbitmq:rabbitmq /etc/rabbitmq/signup-definitions.json 2>/dev/null || true
echo "load_definitions = /etc/rabbitmq/signup-definitions.json" > /etc/rabbitmq/conf.d/90-signup.conf
chmod 644 /etc/rabbitmq/conf.d/90-signup.conf
exec docker-entrypoint.sh "$@"

#!/usr/bin/env bash
# The README's "walk-through with curl" as a script: every flow a newcomer should see, against a
# running PocketPay, failing loudly (HTTP status, problem code and detail) at the first surprise.
# It runs again and again on the same database: users that exist are logged in, and every
# amount is checked relative to the wallets as they were when the run began.
#
#   scripts/demo.sh                  # against $POCKETPAY_URL (default http://127.0.0.1:8011, `make up`)
#   scripts/demo.sh --server [RUNS]  # `make demo`: starts `pocketpay up` on SQLite in a temporary
#                                    # var dir (or $DEMO_VAR_DIR) on a free port (or $DEMO_PORT),
#                                    # runs the walk-through RUNS times (2), always stops the server
#
# Needs bash, curl and jq. DEMO_TIMEOUT_SECONDS (30) bounds every wait.
set -euo pipefail

BASE=${POCKETPAY_URL:-http://127.0.0.1:8011}
BASE=${BASE%/}
API=$BASE/api/v1
PASSWORD=${DEMO_PASSWORD:-correct-horse-battery}
ALICE_EMAIL=alice@example.com
BOB_EMAIL=bob@example.com
TIMEOUT=${DEMO_TIMEOUT_SECONDS:-30}
JSON='content-type: application/json'
LAST=""  # what the last poll saw, for the timeout message

die() {
  echo "demo: FAILED: $*" >&2
  exit 1
}

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is not installed (Debian/Ubuntu: apt-get install $1)"
}

# call STATUSES METHOD URL [curl args...]: prints the answer's body. Any other status, or no
# answer at all, prints the problem+json code and detail and exits 1.
call() {
  local expected=$1 method=$2 url=$3 out status body
  shift 3
  out=$(curl -sS --max-time 30 -X "$method" -w '\n%{http_code}' "$url" "$@") ||
    die "$method $url: no answer from $BASE (is PocketPay running? curl exit status $?)"
  status=${out##*$'\n'}
  body=${out%$'\n'*}
  case " $expected " in
    *" $status "*) printf '%s' "$body" ;;
    *)
      local problem
      problem=$(jq -r '"\(.code // "-"): \(.detail // .title // "")"' <<<"$body" 2>/dev/null) ||
        problem=$(head -c 300 <<<"$body")
      die "$method $url: HTTP $status (expected $expected): $problem"
      ;;
  esac
}

auth() { printf 'Authorization: Bearer %s' "$1"; }

# A fresh Idempotency-Key: one per operation, reused only to retry that same operation.
new_key() {
  cat /proc/sys/kernel/random/uuid 2>/dev/null || uuidgen 2>/dev/null ||
    echo "demo-$(date +%s)-$RANDOM$RANDOM"
}

money() { printf '%d.%02d' $(($1 / 100)) $(($1 % 100)); }

# wait_until WHAT COMMAND...: polls COMMAND every 0.5 s until it succeeds, at most $TIMEOUT s.
wait_until() {
  local what=$1 deadline=$((SECONDS + TIMEOUT))
  shift
  LAST=""
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || die "timed out after ${TIMEOUT}s waiting for $what (last seen: ${LAST:-nothing})"
    sleep 0.5
  done
}

# session VAR EMAIL NAME: signs up, or logs in when the email is taken; VAR = the access token.
session() {
  local var=$1 email=$2 name=$3 out token
  out=$(call "201 409" POST "$API/auth/signup" -H "$JSON" \
    -d "$(jq -nc --arg e "$email" --arg p "$PASSWORD" --arg n "$name" '{email:$e,password:$p,name:$n}')")
  if [ "$(jq -r '.code // empty' <<<"$out")" = auth.email_taken ]; then
    out=$(call 200 POST "$API/auth/login" -H "$JSON" \
      -d "$(jq -nc --arg e "$email" --arg p "$PASSWORD" '{email:$e,password:$p}')")
    echo "  $email exists: logged in"
  elif [ -n "$(jq -r '.code // empty' <<<"$out")" ]; then
    die "POST $API/auth/signup: HTTP 409: $(jq -r '"\(.code): \(.detail)"' <<<"$out")"
  else
    echo "  $email signed up"
  fi
  token=$(jq -r '.access_token // empty' <<<"$out")
  [ -n "$token" ] || die "no access_token in the answer for $email"
  printf -v "$var" '%s' "$token"
}

# balance TOKEN FIELD: the USD wallet's available_minor, pending_minor or posted_minor (0
# before the first credit: no wallet yet).
balance() {
  call 200 GET "$API/wallets" -H "$(auth "$1")" |
    jq -r --arg f "$2" '[.data[] | select(.currency == "USD") | .[$f]] | first // 0'
}

balance_is() { # balance_is TOKEN FIELD EXPECTED_MINOR
  LAST=$(balance "$1" "$2") || exit 1
  [ "$LAST" -eq "$3" ]
}

payment_is() { # payment_is ID STATUS...: the payment is in one of these statuses
  local id=$1 out
  shift
  out=$(call 200 GET "$API/payments/$id" -H "$(auth "$ALICE")") || exit 1
  LAST=$(jq -r .status <<<"$out")
  case " $* " in *" $LAST "*) return 0 ;; esac
  case $LAST in
    failed | canceled | refunded)
      die "payment $id ended $LAST ($(jq -r '"\(.failure_code // "-"): \(.failure_message // "")"' <<<"$out"))"
      ;;
  esac
  return 1
}

refund_is() { # refund_is ID STATUS
  local out
  out=$(call 200 GET "$API/refunds/$1" -H "$(auth "$ALICE")") || exit 1
  LAST=$(jq -r .status <<<"$out")
  [ "$LAST" != failed ] || die "refund $1 failed ($(jq -r '.failure_code // "-"' <<<"$out"))"
  [ "$LAST" = "$2" ]
}

payout_is() { # payout_is ID STATUS
  local out
  out=$(call 200 GET "$API/payouts/$1" -H "$(auth "$ALICE")") || exit 1
  LAST=$(jq -r .status <<<"$out")
  case $LAST in
    failed | canceled) die "payout $1 ended $LAST ($(jq -r '.failure_code // "-"' <<<"$out"))" ;;
  esac
  [ "$LAST" = "$2" ]
}

dispute_of() { # dispute_of PAYMENT_ID: LAST = the id of the payment's dispute, once recorded
  LAST=$(call 200 GET "$API/payments/$1/disputes" -H "$(auth "$ALICE")" | jq -r '.data[0].id // empty') ||
    exit 1
  [ -n "$LAST" ]
}

dispute_is() { # dispute_is ID STATUS
  LAST=$(call 200 GET "$API/disputes/$1" -H "$(auth "$ALICE")" | jq -r .status) || exit 1
  [ "$LAST" != lost ] || die "dispute $1 was lost"
  [ "$LAST" = "$2" ]
}

pay() { # pay AMOUNT_MINOR PAYMENT_METHOD [CAPTURE_METHOD]: prints the new payment
  call 202 POST "$API/payments" -H "$(auth "$ALICE")" -H "$JSON" -H "Idempotency-Key: $(new_key)" \
    -d "{\"amount_minor\":$1,\"currency\":\"USD\",\"payment_method\":\"$2\",\"capture_method\":\"${3:-automatic}\"}"
}

expect_wallet() { # expect_wallet NAME TOKEN EXPECTED_MINOR: waits for it, then prints it
  wait_until "$1's available USD balance to be $(money "$3")" balance_is "$2" available_minor "$3"
  echo "  $1's wallet: $(money "$3") USD available"
}

walkthrough() {
  need curl
  need jq
  echo "PocketPay walk-through against $BASE"
  call 200 GET "$BASE/readyz" >/dev/null

  echo "1. Sign up Alice and Bob (or log in: they exist after a first run)"
  session ALICE "$ALICE_EMAIL" Alice
  session BOB "$BOB_EMAIL" Bob
  call 200 GET "$API/me" -H "$(auth "$ALICE")" | jq -r '"  me: \(.id) \(.email) (\(.role))"'
  local a0 b0
  a0=$(balance "$ALICE" available_minor)
  b0=$(balance "$BOB" available_minor)
  echo "  before this run: Alice $(money "$a0") USD, Bob $(money "$b0") USD available"

  echo "2. Top up Alice's wallet by card: 50.00 USD with pm_card_visa (an Idempotency-Key per POST)"
  local key out pay again
  key=$(new_key)
  out=$(call 202 POST "$API/payments" -H "$(auth "$ALICE")" -H "$JSON" -H "Idempotency-Key: $key" \
    -d '{"amount_minor":5000,"currency":"USD","payment_method":"pm_card_visa"}')
  pay=$(jq -r .id <<<"$out")
  echo "  $pay: $(jq -r .status <<<"$out")"
  again=$(call 202 POST "$API/payments" -H "$(auth "$ALICE")" -H "$JSON" -H "Idempotency-Key: $key" \
    -d '{"amount_minor":5000,"currency":"USD","payment_method":"pm_card_visa"}' | jq -r .id)
  [ "$again" = "$pay" ] || die "a retry with the same Idempotency-Key made another payment ($again)"
  echo "  retried with the same key: the same payment, charged once"

  echo "3. Wait until it is captured and the wallet shows the credit"
  wait_until "payment $pay to be captured" payment_is "$pay" captured settled
  echo "  $pay: $LAST"
  expect_wallet Alice "$ALICE" $((a0 + 5000))

  echo "4. Send 20.00 USD to Bob"
  out=$(call 201 POST "$API/transfers" -H "$(auth "$ALICE")" -H "$JSON" -H "Idempotency-Key: $(new_key)" \
    -d "{\"recipient\":\"$BOB_EMAIL\",\"amount_minor\":2000,\"currency\":\"USD\",\"note\":\"lunch\"}")
  jq -r '"  \(.id): \(.status), \(.amount_minor) \(.currency) to \(.recipient_email)"' <<<"$out"
  expect_wallet Alice "$ALICE" $((a0 + 3000))
  expect_wallet Bob "$BOB" $((b0 + 2000))

  echo "5. Refund 10.00 USD of the top-up (held in the wallet first, then sent back to the card)"
  local refund
  out=$(call 202 POST "$API/payments/$pay/refunds" -H "$(auth "$ALICE")" -H "$JSON" \
    -H "Idempotency-Key: $(new_key)" -d '{"amount_minor":1000}')
  refund=$(jq -r .id <<<"$out")
  wait_until "refund $refund to succeed" refund_is "$refund" succeeded
  echo "  $refund: succeeded"
  expect_wallet Alice "$ALICE" $((a0 + 2000))

  echo "6. Authorize now, capture later (30.00 held, 25.00 captured); or cancel before capture"
  local hold
  hold=$(pay 3000 pm_card_visa manual | jq -r .id)
  wait_until "payment $hold to be authorized" payment_is "$hold" authorized
  call 200 POST "$API/payments/$hold/capture" -H "$(auth "$ALICE")" -H "$JSON" \
    -H "Idempotency-Key: $(new_key)" -d '{"amount_minor":2500}' >/dev/null
  wait_until "payment $hold to be captured" payment_is "$hold" captured settled
  echo "  $hold: authorized, then 25.00 captured"
  expect_wallet Alice "$ALICE" $((a0 + 4500))
  hold=$(pay 1000 pm_card_visa manual | jq -r .id)
  wait_until "payment $hold to be authorized" payment_is "$hold" authorized
  call 200 POST "$API/payments/$hold/cancel" -H "$(auth "$ALICE")" \
    -H "Idempotency-Key: $(new_key)" >/dev/null
  wait_until "payment $hold to be canceled" payment_is "$hold" canceled
  echo "  $hold: authorized, then canceled (nothing credited)"

  echo "7. A declined card (pm_card_chargeDeclined): the payment fails with the decline code"
  local declined
  declined=$(pay 1500 pm_card_chargeDeclined | jq -r .id)
  wait_until "payment $declined to fail" payment_is "$declined" failed
  call 200 GET "$API/payments/$declined" -H "$(auth "$ALICE")" |
    jq -r '"  \(.id): \(.status) (\(.failure_code))"'

  echo "8. The top-up's timeline (settled a few seconds after the capture)"
  wait_until "payment $pay to be settled" payment_is "$pay" settled
  out=$(call 200 GET "$API/payments/$pay/events" -H "$(auth "$ALICE")")
  jq -r '.data[] | "  \(.from_status // "-") -> \(.to_status) (\(.cause))"' <<<"$out"
  jq -e '[.data[].to_status] | index("captured") and index("settled")' <<<"$out" >/dev/null ||
    die "the timeline of $pay lacks captured or settled"
  call 200 GET "$API/payments/$pay/refunds" -H "$(auth "$ALICE")" |
    jq -r '"  refunds: " + ([.data[] | "\(.id) \(.amount_minor) \(.status)"] | join(", "))'

  if call 200 GET "$BASE/openapi.json" | jq -e '.paths | has("/api/v1/api-keys")' >/dev/null; then
    echo "9. An API key for scripts: create (read_only), use, refused a POST, revoke"
    local secret key_id
    out=$(call 201 POST "$API/api-keys" -H "$(auth "$ALICE")" -H "$JSON" \
      -d '{"name":"demo","scopes":["read_only"]}')
    secret=$(jq -r .secret <<<"$out")
    key_id=$(jq -r .id <<<"$out")
    echo "  $key_id: $(jq -r '.secret[0:10]' <<<"$out")... (the secret is shown once)"
    call 200 GET "$API/payments?limit=1" -H "$(auth "$secret")" |
      jq -r '"  GET /payments with the key: \(.data | length) payment, has_more \(.has_more)"'
    call 403 POST "$API/payments" -H "$(auth "$secret")" -H "$JSON" -H "Idempotency-Key: $(new_key)" \
      -d '{"amount_minor":100,"currency":"USD","payment_method":"pm_card_visa"}' |
      jq -r '"  POST /payments with the read_only key: \(.status) \(.code)"'
    call 200 POST "$API/api-keys/$key_id/revoke" -H "$(auth "$ALICE")" |
      jq -r '"  revoked at \(.revoked_at)"'
    call 401 GET "$API/payments?limit=1" -H "$(auth "$secret")" |
      jq -r '"  the revoked key: \(.status) \(.code)"'
  else
    echo "9. (no /api/v1/api-keys on this server: API keys skipped)"
  fi

  echo "10. Both wallets: Alice +45.00 (50 - 20 - 10 + 25), Bob +20.00 since the run began"
  local a1 b1
  a1=$(balance "$ALICE" available_minor)
  b1=$(balance "$BOB" available_minor)
  [ "$a1" -eq $((a0 + 4500)) ] || die "Alice has $(money "$a1") USD, expected $(money $((a0 + 4500)))"
  [ "$b1" -eq $((b0 + 2000)) ] || die "Bob has $(money "$b1") USD, expected $(money $((b0 + 2000)))"
  [ "$(balance "$ALICE" posted_minor)" -eq "$a1" ] || die "Alice's wallet still has money pending"
  echo "  Alice: $(money "$a0") -> $(money "$a1") USD"
  echo "  Bob:   $(money "$b0") -> $(money "$b1") USD"

  echo "11. Bob converts 5.00 USD to yen: a quote, then the conversion (once)"
  local quote jpy0 jpy1 buy
  jpy0=$(call 200 GET "$API/wallets" -H "$(auth "$BOB")" |
    jq -r '[.data[] | select(.currency == "JPY") | .available_minor] | first // 0')
  out=$(call 201 POST "$API/fx/quotes" -H "$(auth "$BOB")" -H "$JSON" -H "Idempotency-Key: $(new_key)" \
    -d '{"sell_currency":"USD","buy_currency":"JPY","sell_amount_minor":500}')
  quote=$(jq -r .id <<<"$out")
  buy=$(jq -r .buy_amount_minor <<<"$out")
  jq -r '"  \(.id): \(.sell_amount_minor) USD cents -> \(.buy_amount_minor) JPY at \(.rate) (fee \(.fee_minor))"' <<<"$out"
  call 201 POST "$API/conversions" -H "$(auth "$BOB")" -H "$JSON" -H "Idempotency-Key: $(new_key)" \
    -d "{\"quote_id\":\"$quote\"}" | jq -r '"  \(.id): converted"'
  call 409 POST "$API/conversions" -H "$(auth "$BOB")" -H "$JSON" -H "Idempotency-Key: $(new_key)" \
    -d "{\"quote_id\":\"$quote\"}" | jq -r '"  the same quote again: \(.status) \(.code)"'
  [ "$(balance "$BOB" available_minor)" -eq $((b1 - 500)) ] || die "Bob's USD did not drop by 5.00"
  jpy1=$(call 200 GET "$API/wallets" -H "$(auth "$BOB")" |
    jq -r '[.data[] | select(.currency == "JPY") | .available_minor] | first // 0')
  [ "$jpy1" -eq $((jpy0 + buy)) ] || die "Bob has $jpy1 JPY, expected $((jpy0 + buy))"
  echo "  Bob: $(money $((b1 - 500))) USD and $jpy1 JPY"

  echo "12. Alice pays 5.00 USD out to her bank account: held at once, gone once paid"
  local payout
  # Only settled money can be paid out (the PSP's available balance).
  wait_until "payment $pay to be settled" payment_is "$pay" settled
  out=$(call 202 POST "$API/payouts" -H "$(auth "$ALICE")" -H "$JSON" -H "Idempotency-Key: $(new_key)" \
    -d '{"amount_minor":500,"currency":"USD","description":"Savings",
         "destination":{"country":"US","routing_number":"110000000","account_number":"000123456789"}}')
  payout=$(jq -r .id <<<"$out")
  jq -r '"  \(.id): \(.status), to the account ending \(.destination.last4)"' <<<"$out"
  wait_until "payout $payout to be paid" payout_is "$payout" paid
  wait_until "Alice's payout to leave her wallet" balance_is "$ALICE" posted_minor $((a1 - 500))
  expect_wallet Alice "$ALICE" $((a1 - 500))

  echo "13. A cardholder disputes Alice's 20.00 top-up: held, answered with evidence, won back"
  local dpay dispute a2
  a2=$((a1 - 500))
  dpay=$(pay 2000 pm_card_createDispute | jq -r .id)
  wait_until "payment $dpay to be captured" payment_is "$dpay" captured settled
  wait_until "the dispute on $dpay to be recorded" dispute_of "$dpay"
  dispute=$LAST
  call 200 GET "$API/disputes/$dispute" -H "$(auth "$ALICE")" |
    jq -r '"  \(.id): \(.status), \(.amount_minor) cents, reason \(.reason), evidence due \(.evidence_due_by)"'
  expect_wallet Alice "$ALICE" "$a2"  # the 20.00 came in and is held
  call 200 POST "$API/disputes/$dispute/evidence" -H "$(auth "$ALICE")" -H "$JSON" \
    -H "Idempotency-Key: $(new_key)" -d '{"text":"Delivered and signed for. winning_evidence"}' |
    jq -r '"  evidence sent: \(.status)"'
  wait_until "dispute $dispute to be won" dispute_is "$dispute" won
  echo "  dispute $dispute: won"
  expect_wallet Alice "$ALICE" $((a2 + 2000))
  echo "demo: OK"
}

# -- `make demo`: a temporary server, the walk-through RUNS times, the server always stopped --

SERVER_PID=""
SERVER_VAR=""
KEEP_VAR=1

stop_server() {
  local rc=$?
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ] && [ -f "$SERVER_VAR/server.log" ]; then
    echo "demo: the server's last log lines ($SERVER_VAR/server.log):" >&2
    tail -n 20 "$SERVER_VAR/server.log" >&2
  elif [ "$KEEP_VAR" = 0 ]; then
    rm -rf "$SERVER_VAR"
  fi
  exit "$rc"
}

serve() {
  local runs=${1:-2} root bin python port url failed=0
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  bin=${POCKETPAY_BIN:-$root/.venv/bin/pocketpay}
  python=${PYTHON_BIN:-$root/.venv/bin/python}
  [ -x "$bin" ] || die "$bin not found: run 'make install' first"
  need curl
  need jq
  if [ -n "${DEMO_VAR_DIR:-}" ]; then
    SERVER_VAR=$DEMO_VAR_DIR
    mkdir -p "$SERVER_VAR"
  else
    SERVER_VAR=$(mktemp -d "${TMPDIR:-/tmp}/pocketpay-demo.XXXXXX")
    KEEP_VAR=0
  fi
  port=${DEMO_PORT:-$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
  url=http://127.0.0.1:$port
  trap stop_server EXIT
  trap 'exit 130' INT TERM HUP
  echo "demo: pocketpay up on $url, SQLite in $SERVER_VAR"
  # Only this demo's settings: none of the caller's POCKETPAY_* (a PostgreSQL URL, say) leaks in.
  (
    for name in $(compgen -e | grep '^POCKETPAY_' || true); do unset "$name"; done
    export POCKETPAY_VAR_DIR=$SERVER_VAR POCKETPAY_PORT=$port
    exec "$bin" up
  ) >>"$SERVER_VAR/server.log" 2>&1 &
  SERVER_PID=$!
  local deadline=$((SECONDS + 60))
  until curl -fsS --max-time 2 "$url/readyz" >/dev/null 2>&1; do
    kill -0 "$SERVER_PID" 2>/dev/null || die "pocketpay up exited before it was ready"
    [ "$SECONDS" -lt "$deadline" ] || die "pocketpay up not ready on $url/readyz after 60s"
    sleep 0.3
  done
  for run in $(seq 1 "$runs"); do
    echo "== demo run $run of $runs"
    POCKETPAY_URL=$url bash "${BASH_SOURCE[0]}" || { failed=1; echo "== demo run $run FAILED" >&2; }
  done
  [ "$failed" = 0 ] || die "the walk-through failed (see above)"
  echo "demo: $runs runs in a row passed"
}

case "${1:-}" in
  --server) serve "${2:-2}" ;;
  "") walkthrough ;;
  *) die "usage: scripts/demo.sh [--server [RUNS]]" ;;
esac

# Shared by cloudpipe's scripts (sourced, not run): timed steps, and apt that waits
# for the package manager instead of failing when another apt holds its lock (a
# fresh cloud VM's first-boot updates, unattended-upgrades, a second terminal).

# Seconds apt waits for a lock held by another apt or dpkg before giving up.
APT_LOCK_TIMEOUT=${APT_LOCK_TIMEOUT:-600}

# `12s` or `3m04s`.
duration() {
  local s=$1
  if ((s < 60)); then printf '%ds' "$s"; else printf '%dm%02ds' $((s / 60)) $((s % 60)); fi
}

# step TITLE CMD...: say what runs, run it, say how long it took (or that it failed).
step() {
  local title=$1 start=$SECONDS rc=0
  shift
  printf '\n==> %s\n' "$title"
  "$@" || rc=$?
  if ((rc == 0)); then
    printf '==> %s: done in %s\n' "$title" "$(duration $((SECONDS - start)))"
  else
    printf '==> %s: FAILED (exit status %d) after %s\n' "$title" "$rc" "$(duration $((SECONDS - start)))" >&2
  fi
  return $rc
}

# apt-get, waiting up to APT_LOCK_TIMEOUT seconds for the dpkg lock (apt's
# DPkg::Lock::Timeout, apt >= 1.9.11).
apt_get() {
  apt-get -o DPkg::Lock::Timeout="$APT_LOCK_TIMEOUT" "$@"
}

# `apt-get update`, waiting for the package lists' lock too: apt's
# DPkg::Lock::Timeout covers the dpkg lock only, and `apt-get update` fails at once
# with "Could not get lock /var/lib/apt/lists/lock" while another update runs.
apt_update() {
  local deadline=$((SECONDS + APT_LOCK_TIMEOUT)) out rc said=
  while :; do
    rc=0
    out=$(apt_get update "$@" 2>&1) || rc=$?
    if ((rc == 0)) || ! grep -q 'Could not get lock' <<<"$out" || ((SECONDS >= deadline)); then
      [[ -n $out ]] && printf '%s\n' "$out"
      return $rc
    fi
    if [[ -z $said ]]; then
      echo "waiting for another apt to finish ($(grep -m1 'Could not get lock' <<<"$out" | sed 's/^E: //')); up to ${APT_LOCK_TIMEOUT}s"
      said=1
    fi
    sleep 2
  done
}

//! Counters in Redis, shared by every replica: one `EVALSHA` per request for all the limits
//! it falls under (the script checks every limit, then counts the request against all of
//! them only when none refuses), atomic because Redis runs a script alone. Time is Redis's
//! own (`TIME`), so replicas with drifting clocks still agree.

use std::time::Instant;

use super::Ask;
use super::algorithm::Verdict;
use crate::redis::{self, Client, Value};

/// ARGV: per limit `kind` (`r` GCRA, `q` quota), the step (emission interval or window, µs),
/// the cap (burst or the quota's count). Reply: `{allowed, remaining, reset_us, retry_us}`
/// per limit, then the overall result.
pub const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
local writes = {}
local ok = 1
for i = 1, #KEYS do
  local kind = ARGV[3 * i - 2]
  local step = tonumber(ARGV[3 * i - 1])
  local cap = tonumber(ARGV[3 * i])
  if kind == 'r' then
    local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
    local tau = step * cap
    local base = math.max(tat, now)
    local ahead = base + step - now
    if ahead > tau then
      ok = 0
      out[#out + 1] = 0; out[#out + 1] = 0
      out[#out + 1] = base - now; out[#out + 1] = ahead - tau
    else
      writes[i] = base + step
      out[#out + 1] = 1; out[#out + 1] = math.floor((tau - ahead) / step)
      out[#out + 1] = ahead; out[#out + 1] = 0
    end
  else
    local start = now - (now % step)
    local stored = redis.call('HMGET', KEYS[i], 's', 'c')
    local count = 0
    if tonumber(stored[1] or '-1') == start then count = tonumber(stored[2] or '0') end
    local reset = start + step - now
    if count >= cap then
      ok = 0
      out[#out + 1] = 0; out[#out + 1] = 0; out[#out + 1] = reset; out[#out + 1] = reset
    else
      writes[i] = {start, count + 1}
      out[#out + 1] = 1; out[#out + 1] = cap - count - 1; out[#out + 1] = reset; out[#out + 1] = 0
    end
  end
end
if ok == 1 then
  for i = 1, #KEYS do
    local step = tonumber(ARGV[3 * i - 1])
    if ARGV[3 * i - 2] == 'r' then
      redis.call('SET', KEYS[i], string.format('%.0f', writes[i]), 'PX', math.ceil((writes[i] - now) / 1000) + 1)
    else
      redis.call('HSET', KEYS[i], 's', string.format('%.0f', writes[i][1]), 'c', writes[i][2])
      redis.call('PEXPIRE', KEYS[i], math.ceil(step / 1000) + 1000)
    end
  end
end
out[#out + 1] = ok
return out
";

/// The Redis store.
#[derive(Debug)]
pub struct SharedStore {
    pub client: std::sync::Arc<Client>,
    sha1: String,
}

impl SharedStore {
    #[must_use]
    pub fn new(client: std::sync::Arc<Client>) -> Self {
        Self {
            client,
            sha1: redis::script_sha1(SCRIPT),
        }
    }

    /// The verdict of every limit in `asks`, in one round trip; `keys` are their Redis keys.
    ///
    /// # Errors
    /// The call failed (timeout, connection, circuit open) or the reply is not the script's:
    /// `(kind, error)` with the metrics label.
    pub async fn check(
        &self,
        asks: &[Ask<'_>],
        keys: &[String],
        latency: &crate::metrics::Latency,
    ) -> Result<Vec<Verdict>, &'static str> {
        let args: Vec<String> = asks
            .iter()
            .flat_map(|a| {
                [
                    if a.quota { "q" } else { "r" }.to_owned(),
                    a.step_us.to_string(),
                    a.cap.to_string(),
                ]
            })
            .collect();
        let key_refs: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        let arg_refs: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let started = Instant::now();
        let reply = redis::eval(&self.client, SCRIPT, &self.sha1, &key_refs, &arg_refs).await;
        latency.observe(started.elapsed());
        let reply = reply.map_err(|e| e.kind())?;
        let Value::Array(items) = reply else {
            if let Value::Error(e) = &reply {
                tracing::warn!(error = %e, "rate-limit script failed");
            }
            return Err("script");
        };
        if items.len() != asks.len() * 4 + 1 {
            return Err("protocol");
        }
        let n = |v: &Value| u64::try_from(v.as_int().unwrap_or(0)).unwrap_or(0);
        Ok(items
            .chunks_exact(4)
            .map(|c| Verdict {
                allowed: n(&c[0]) == 1,
                remaining: n(&c[1]),
                reset_us: n(&c[2]),
                retry_us: n(&c[3]),
            })
            .collect())
    }
}

/**
 * The one redaction helper. Everything that leaves the process as text (audit
 * details and paths, logs, syslog, session output) goes through here.
 */
export const REDACTED = '[REDACTED]';

// Order matters: URL-shaped secrets first, then prefixed tokens, then generic forms.
const PATTERNS: RegExp[] = [
  // Slack and Discord webhook URLs
  /https:\/\/hooks\.slack\.com\/(?:services|workflows|triggers)\/[A-Za-z0-9_/-]+/g,
  /https:\/\/(?:[a-z]+\.)?discord(?:app)?\.com\/api\/webhooks\/[0-9]+\/[A-Za-z0-9_-]+/g,
  // Authorization header values (Bearer/Basic/Token …)
  /\b(authorization\s*[:=]\s*"?)(?:bearer|basic|token|digest)?\s*[^\s",;]+/gi,
  // Loki tokens (new and legacy formats), Anthropic, OpenAI-style, GitHub, AWS
  /\bloki_[A-Za-z0-9_-]{8,}/g,
  /\bsk-ant-[A-Za-z0-9_-]{8,}/g,
  /\bsk-[A-Za-z0-9_-]{16,}/g,
  /\b(?:ghp|gho|ghu|ghs|ghr|github_pat)_[A-Za-z0-9_]{20,}/g,
  /\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b/g,
  // token-like query parameters
  /([?&](?:token|access_token|api_key|apikey|key|secret|password)=)[^&#\s"]*/gi,
];

/** Redact secrets from a string. Idempotent. */
export function redactString(input: string): string {
  let out = input;
  for (const re of PATTERNS) {
    out = out.replace(re, (match: string, prefix?: unknown) =>
      typeof prefix === 'string' && match.startsWith(prefix) ? `${prefix}${REDACTED}` : REDACTED,
    );
  }
  return out;
}

/** Values shorter than this are not redacted by value (a short value would blank ordinary text). */
export const MIN_SECRET_VALUE_CHARS = 6;

/** The value as it appears inside a JSON string (agents print tool results as JSON lines). */
const jsonEscaped = (v: string) => JSON.stringify(v).slice(1, -1);

/**
 * How a value can appear in one line of output: as is, JSON-escaped, and, for a value
 * of several lines (a PEM key, a JSON credential), each of its lines (output is
 * redacted line by line, so the whole value never appears in one).
 */
function spellings(v: string): string[] {
  const lines = v.split(/\r\n|\r|\n/);
  return [v, jsonEscaped(v), ...(lines.length > 1 ? lines.flatMap((l) => [l, jsonEscaped(l)]) : [])];
}

/**
 * A redactor that also knows these exact values (the credentials a session was
 * handed through its env allowlist): every occurrence becomes [REDACTED], then the
 * patterns run.
 */
export function secretRedactor(values: readonly string[]): (input: string) => string {
  const known = [...new Set(values.flatMap(spellings).filter((v) => v.length >= MIN_SECRET_VALUE_CHARS))].sort((a, b) => b.length - a.length);
  if (known.length === 0) return redactString;
  return (input) => {
    let out = input;
    for (const v of known) if (out.includes(v)) out = out.split(v).join(REDACTED);
    return redactString(out);
  };
}

const SECRET_KEYS = /^(?:authorization|token|access_token|refresh_token|id_token|api_key|apikey|password|secret|client_secret|cookie|set-cookie|x-api-key)$/i;

/** Deep-redact a JSON-like value: secret-named keys are replaced, strings scrubbed. */
export function redactValue<T>(value: T, depth = 0): T {
  if (depth > 32) return REDACTED as unknown as T;
  if (typeof value === 'string') return redactString(value) as unknown as T;
  if (Array.isArray(value)) return value.map((v) => redactValue(v, depth + 1)) as unknown as T;
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      out[k] = SECRET_KEYS.test(k) && v != null ? REDACTED : redactValue(v, depth + 1);
    }
    return out as T;
  }
  return value;
}

/** Where secrets appear in a text (pattern index and position): for `loki security check`. */
export function findSecrets(input: string): { index: number; length: number }[] {
  const out: { index: number; length: number }[] = [];
  for (const re of PATTERNS) {
    for (const m of input.matchAll(new RegExp(re.source, re.flags))) out.push({ index: m.index ?? 0, length: m[0].length });
  }
  return out.sort((a, b) => a.index - b.index);
}

/** Redact a URL path with query string (e.g. `/ws?token=…`). */
export function redactPath(pathWithQuery: string): string {
  return redactString(pathWithQuery);
}

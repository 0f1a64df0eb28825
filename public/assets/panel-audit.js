// @ts-check
import { apiGet } from './api.js';
import { el, json, replace, time } from './dom.js';

/** `token:ci-bot`, `oidc:alice@example.com`, `anonymous` (no trailing colon when there is neither a name nor an id). */
export function actorText(actor) {
  if (!actor || typeof actor !== 'object') return '';
  const who = actor.name ?? actor.id;
  return who === null || who === undefined || who === '' ? String(actor.type ?? '') : `${actor.type}:${who}`;
}

/** The audit log: list with filters, chain verification, the latest signed checkpoint. */
export function auditPanel() {
  const error = el('p', { class: 'error', role: 'alert', hidden: true });
  const showError = (err) => {
    error.hidden = !err;
    error.textContent = err ? err.message : '';
  };
  const f = {
    action: el('input', { type: 'text', name: 'action', placeholder: 'e.g. token.create', autocomplete: 'off', spellcheck: 'false' }),
    actor: el('input', { type: 'text', name: 'actor', autocomplete: 'off', spellcheck: 'false' }),
    since: el('input', { type: 'text', name: 'since', placeholder: 'ISO date', autocomplete: 'off', spellcheck: 'false' }),
    limit: el('input', { type: 'number', name: 'limit', min: '1', max: '1000', value: '100' }),
  };
  const tbody = el('tbody', { id: 'audit-rows' });
  const verifyOut = el('pre', { id: 'audit-verify', class: 'result' });
  const checkpointOut = el('pre', { id: 'audit-checkpoint', class: 'result' });

  async function refresh() {
    try {
      const body = await apiGet('/api/enterprise/audit', {
        query: { action: f.action.value.trim(), actor: f.actor.value.trim(), since: f.since.value.trim(), limit: f.limit.value, order: 'desc' },
      });
      replace(
        tbody,
        (body?.entries ?? []).map((e) =>
          el(
            'tr',
            {},
            el('td', {}, String(e.seq)),
            el('td', {}, time(e.ts)),
            el('td', {}, e.action ?? ''),
            el('td', { class: 'name' }, actorText(e.actor)),
            el('td', {}, e.outcome?.status === null || e.outcome?.status === undefined ? (e.outcome?.success ? 'ok' : 'failed') : String(e.outcome.status)),
            el('td', { class: 'path' }, e.request ? `${e.request.method ?? ''} ${e.request.path ?? ''}` : ''),
            el('td', { class: 'data' }, json(e.details ?? {})),
          ),
        ),
      );
      showError(null);
    } catch (err) {
      showError(err);
    }
  }

  async function verify() {
    verifyOut.textContent = 'verifying…';
    try {
      const r = await apiGet('/api/enterprise/audit/verify');
      const lines = [
        r.valid ? `VALID: ${r.entries_checked} entries checked` : `INVALID at #${r.first_invalid_seq}: ${r.reason}`,
        `last hash: ${r.last_hash}`,
        r.checkpoint ? `checkpoint: size ${r.checkpoint.size}, head ${r.checkpoint.head_hash}${r.checkpoint.verified === undefined ? '' : r.checkpoint.verified ? ', signature verified' : ', signature NOT verified'}` : 'no checkpoint',
      ];
      verifyOut.textContent = lines.join('\n');
      verifyOut.className = r.valid ? 'result ok' : 'result bad';
      showError(null);
    } catch (err) {
      verifyOut.textContent = '';
      showError(err);
    }
  }

  async function checkpoint() {
    try {
      const { checkpoint: cp } = await apiGet('/api/enterprise/audit/checkpoint');
      checkpointOut.textContent = cp
        ? [`kind: ${cp.kind}`, `size: ${cp.size}`, `head hash: ${cp.head_hash}`, `time: ${time(cp.time)}`, `signature (JWS): ${cp.jws ?? 'none'}`].join('\n')
        : 'no checkpoint yet';
      showError(null);
    } catch (err) {
      checkpointOut.textContent = '';
      showError(err);
    }
  }

  const node = el(
    'section',
    { id: 'panel-audit', class: 'panel', 'aria-labelledby': 'h-audit' },
    el('h2', { id: 'h-audit' }, 'Audit log'),
    error,
    el(
      'form',
      {
        class: 'inline-form',
        on: {
          submit: (ev) => {
            ev.preventDefault();
            void refresh();
          },
        },
      },
      el('label', {}, 'Action ', f.action),
      el('label', {}, 'Actor ', f.actor),
      el('label', {}, 'Since ', f.since),
      el('label', {}, 'Limit ', f.limit),
      el('button', { type: 'submit' }, 'Filter'),
      el('button', { type: 'button', id: 'audit-verify-button', on: { click: () => verify() } }, 'Verify chain'),
      el('button', { type: 'button', id: 'audit-checkpoint-button', on: { click: () => checkpoint() } }, 'Show checkpoint'),
    ),
    verifyOut,
    checkpointOut,
    el(
      'table',
      { class: 'list' },
      el(
        'thead',
        {},
        el('tr', {}, el('th', {}, 'Seq'), el('th', {}, 'Time'), el('th', {}, 'Action'), el('th', {}, 'Actor'), el('th', {}, 'Outcome'), el('th', {}, 'Request'), el('th', {}, 'Details')),
      ),
      tbody,
    ),
  );
  return { id: 'audit', title: 'Audit', node, refresh };
}

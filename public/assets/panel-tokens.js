// @ts-check
import { apiDelete, apiGet, apiPost } from './api.js';
import { el, replace, time } from './dom.js';

const ROLES = ['viewer', 'operator', 'auditor', 'admin', 'worker'];

/** Tokens (admin): list, create (secret shown once, with a copy button), revoke. */
export function tokensPanel() {
  const error = el('p', { class: 'error', role: 'alert', hidden: true });
  const showError = (err) => {
    error.hidden = !err;
    error.textContent = err ? err.message : '';
  };
  const f = {
    name: el('input', { type: 'text', name: 'name', required: true, maxlength: '255', autocomplete: 'off' }),
    role: el('select', { name: 'role' }, ROLES.map((r) => el('option', { value: r }, r))),
    expires: el('input', { type: 'number', name: 'expires_days', min: '1', max: '3650', placeholder: 'never' }),
  };
  const secretBox = el('div', { id: 'token-secret', class: 'secret', hidden: true });
  const tbody = el('tbody', { id: 'token-rows' });

  function showSecret(record) {
    const value = el('input', { type: 'text', readonly: true, value: record.token, class: 'secret-value', spellcheck: 'false', 'aria-label': 'new token' });
    const status = el('span', { class: 'copy-state' });
    const copy = async () => {
      try {
        await navigator.clipboard.writeText(record.token);
        status.textContent = 'copied';
      } catch {
        value.select();
        status.textContent = 'select and copy it by hand';
      }
    };
    replace(
      secretBox,
      el('p', {}, 'Token ', el('strong', {}, record.name), ' created. Copy it now: it is not shown again.'),
      value,
      el('button', { type: 'button', on: { click: copy } }, 'Copy'),
      el('button', {
        type: 'button',
        on: {
          click: () => {
            replace(secretBox);
            secretBox.hidden = true;
          },
        },
      }, 'Done'),
      status,
    );
    secretBox.hidden = false;
  }

  async function create(ev) {
    ev.preventDefault();
    /** @type {import('../../src/http/api-types').ApiBody<'/api/enterprise/tokens', 'post'>} */
    const body = { name: f.name.value, role: f.role.value };
    if (f.expires.value) body.expires_days = Number(f.expires.value);
    try {
      const record = await apiPost('/api/enterprise/tokens', { body });
      showSecret(record);
      f.name.value = '';
      showError(null);
      await refresh();
    } catch (err) {
      showError(err);
    }
  }

  // Two clicks instead of a confirm() dialog.
  function revokeButton(t) {
    const button = el('button', { type: 'button', class: 'danger' }, 'Revoke');
    let armed = false;
    button.addEventListener('click', async () => {
      if (!armed) {
        armed = true;
        button.textContent = 'Confirm revoke';
        return;
      }
      button.disabled = true;
      try {
        await apiDelete('/api/enterprise/tokens/{id}', { params: { id: t.id } });
        showError(null);
        await refresh();
      } catch (err) {
        showError(err);
        button.disabled = false;
      }
    });
    return button;
  }

  async function refresh() {
    try {
      const body = await apiGet('/api/enterprise/tokens', { query: { all: 'true' } });
      replace(
        tbody,
        (body?.tokens ?? []).map((t) =>
          el(
            'tr',
            { 'data-token': t.id },
            el('td', {}, t.id),
            el('td', { class: 'name' }, t.name),
            el('td', {}, t.role),
            el('td', {}, (t.scopes ?? []).join(', ')),
            el('td', {}, t.status),
            el('td', {}, time(t.created_at)),
            el('td', {}, t.expires_at ? time(t.expires_at) : 'never'),
            el('td', {}, t.last_used_at ? time(t.last_used_at) : ''),
            el('td', {}, t.status === 'active' ? revokeButton(t) : null),
          ),
        ),
      );
      showError(null);
    } catch (err) {
      showError(err);
    }
  }

  const node = el(
    'section',
    { id: 'panel-tokens', class: 'panel', 'aria-labelledby': 'h-tokens' },
    el('h2', { id: 'h-tokens' }, 'Tokens'),
    error,
    el(
      'form',
      { class: 'inline-form', on: { submit: (ev) => create(ev) } },
      el('label', {}, 'Name ', f.name),
      el('label', {}, 'Role ', f.role),
      el('label', {}, 'Expires (days) ', f.expires),
      el('button', { type: 'submit' }, 'Create token'),
    ),
    secretBox,
    el(
      'table',
      { class: 'list' },
      el(
        'thead',
        {},
        el(
          'tr',
          {},
          el('th', {}, 'ID'),
          el('th', {}, 'Name'),
          el('th', {}, 'Role'),
          el('th', {}, 'Scopes'),
          el('th', {}, 'Status'),
          el('th', {}, 'Created'),
          el('th', {}, 'Expires'),
          el('th', {}, 'Last used'),
          el('th', {}, ''),
        ),
      ),
      tbody,
    ),
  );
  return {
    id: 'tokens',
    title: 'Tokens',
    node,
    refresh,
    onEvent(e) {
      if (e.type === 'token_created' || e.type === 'token_revoked') void refresh();
    },
  };
}

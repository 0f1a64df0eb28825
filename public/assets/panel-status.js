import { api } from './api.js';
import { el, json, replace } from './dom.js';

/** Server status: version, flags, session counts, audit tip, live streams. */
export function statusPanel() {
  const body = el('div', { class: 'panel-body' });
  const error = el('p', { class: 'error', role: 'alert', hidden: true });
  const node = el('section', { id: 'panel-status', class: 'panel', 'aria-labelledby': 'h-status' }, el('h2', { id: 'h-status' }, 'Status'), error, body);

  const row = (label, value) => el('tr', {}, el('th', { scope: 'row' }, label), el('td', {}, value));

  async function refresh() {
    try {
      const s = await api('/api/status');
      error.hidden = true;
      const flags = s.flags ?? {};
      replace(
        body,
        el(
          'table',
          { class: 'kv' },
          el(
            'tbody',
            {},
            row('Version', s.version ?? ''),
            row('Runtime', s.runtime ?? ''),
            row('Uptime', `${s.uptime_seconds ?? 0} s`),
            row('Auth', flags.auth_enabled ? 'on' : 'off'),
            row('OIDC', flags.oidc_enabled ? 'on' : 'off'),
            row('Audit', flags.audit_enabled ? 'on' : 'off'),
            row('Sandbox mode', flags.sandbox_mode ? 'on' : 'off'),
            row('Branch protection', flags.branch_protection ? 'on' : 'off'),
            row('Environment', flags.env ?? ''),
            row('Sessions', `${s.sessions?.total ?? 0} ${json(s.sessions?.by_status ?? {})}`),
            row('Audit tip', s.audit ? `#${s.audit.seq} ${s.audit.head_hash ?? ''}` : 'audit off'),
            row('Live streams', json(s.streams ?? {})),
          ),
        ),
      );
    } catch (err) {
      error.hidden = false;
      error.textContent = err.message;
      replace(body);
    }
  }

  return { id: 'status', title: 'Status', node, refresh };
}

/**
 * The dashboard's one rendering helper. Every piece of text, user data
 * included, reaches the page as a text node; attributes go through an
 * allowlist (no event-handler attributes, no href/src/style, so no URL or
 * script from data can land in the page). Listeners are functions, never strings.
 * No innerHTML anywhere in the dashboard.
 */

const SAFE_ATTRS = new Set([
  'id',
  'class',
  'type',
  'name',
  'value',
  'placeholder',
  'title',
  'for',
  'role',
  'min',
  'max',
  'step',
  'autocomplete',
  'spellcheck',
  'colspan',
  'tabindex',
  'maxlength',
  'scope',
]);
const BOOLEAN_ATTRS = new Set(['disabled', 'checked', 'readonly', 'hidden', 'required', 'selected', 'open']);

function safeAttrName(name) {
  return SAFE_ATTRS.has(name) || /^(?:aria|data)-[a-z][a-z0-9-]*$/.test(name);
}

function append(node, child) {
  if (child === null || child === undefined || child === false) return;
  if (Array.isArray(child)) {
    for (const c of child) append(node, c);
    return;
  }
  if (child instanceof Node) {
    node.appendChild(child);
    return;
  }
  node.appendChild(document.createTextNode(String(child)));
}

/**
 * el('button', { class: 'danger', on: { click } }, 'Revoke ', name)
 * attrs: allowlisted names (string values, set with setAttribute), boolean
 * attributes, `on` (event → function).
 */
export function el(tag, attrs, ...children) {
  if (!/^[a-z][a-z0-9]*$/.test(tag) || tag === 'script' || tag === 'style' || tag === 'iframe' || tag === 'object' || tag === 'embed') {
    throw new Error(`el: refused tag ${tag}`);
  }
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'on') {
      for (const [event, fn] of Object.entries(value)) {
        if (typeof fn !== 'function') throw new Error(`el: listener for ${event} must be a function`);
        node.addEventListener(event, fn);
      }
    } else if (BOOLEAN_ATTRS.has(name)) {
      node.toggleAttribute(name, Boolean(value));
    } else if (safeAttrName(name)) {
      node.setAttribute(name, String(value));
    } else {
      throw new Error(`el: refused attribute ${name}`);
    }
  }
  append(node, children);
  return node;
}

/** Replace a node's content with the given children (text or nodes). */
export function replace(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

/** Short, readable JSON for data shown as text (never parsed as markup). */
export function json(value) {
  try {
    return JSON.stringify(value, null, 0) ?? '';
  } catch {
    return String(value);
  }
}

export function time(value) {
  if (value === null || value === undefined || value === '') return '';
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? String(value) : d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

// GitSec dashboard: every screen is rendered here from the JSON API under /api/v1, with the
// session cookie and the page's CSRF token. Text from the API is only ever inserted as text
// (h() below never parses HTML), so a repository name or an error message cannot become markup.
'use strict';
(() => {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const main = document.getElementById('main');

  // ---- DOM -------------------------------------------------------------------------------
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'class') el.className = v;
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k in el && typeof v !== 'string') el[k] = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    append(el, kids);
    return el;
  }
  function append(el, kids) {
    for (const kid of kids.flat(Infinity)) {
      if (kid === undefined || kid === null || kid === false) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }
  const text = (s) => document.createTextNode(s == null ? '' : String(s));

  // ---- API -------------------------------------------------------------------------------
  class APIError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }
  async function api(method, path, body) {
    const opts = { method, headers: { Accept: 'application/json' }, credentials: 'same-origin' };
    if (method !== 'GET') opts.headers['X-CSRF-Token'] = csrf;
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch('/api/v1' + path, opts);
    } catch (e) {
      throw new APIError(0, 'network', 'GitSec did not answer (' + e.message + '); check that the server is running and try again.');
    }
    if (resp.status === 401) {
      location.assign('/signin?next=' + encodeURIComponent(location.pathname + location.search));
      throw new APIError(401, 'unauthorized', 'Your session has ended; sign in again.');
    }
    const data = await resp.json().catch(() => null);
    if (!resp.ok) {
      const err = (data && data.error) || {};
      throw new APIError(resp.status, err.code || 'http_' + resp.status, err.message || resp.statusText);
    }
    return data;
  }
  const q = (params) => {
    const s = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') s.set(k, v);
    const str = s.toString();
    return str ? '?' + str : '';
  };

  // ---- formatting ------------------------------------------------------------------------
  function fmtBytes(n) {
    if (n == null) return '—';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)) + ' ' + units[i];
  }
  function fmtDuration(ms) {
    if (ms == null) return '—';
    if (ms < 1000) return ms + ' ms';
    const s = ms / 1000;
    if (s < 60) return s.toFixed(1) + ' s';
    return Math.floor(s / 60) + ' min ' + Math.round(s % 60) + ' s';
  }
  function when(iso) {
    if (!iso) return h('span', { class: 'muted' }, 'never');
    const d = new Date(iso);
    const secs = Math.round((Date.now() - d.getTime()) / 1000);
    let rel;
    if (secs < 45) rel = 'just now';
    else if (secs < 3600) rel = Math.round(secs / 60) + ' min ago';
    else if (secs < 86400) rel = Math.round(secs / 3600) + ' h ago';
    else rel = Math.round(secs / 86400) + ' d ago';
    return h('time', { datetime: d.toISOString(), title: d.toLocaleString() }, rel);
  }
  const INSTALLATION_STATUS = {
    pending: 'Pending', onboarding: 'Discovering', active: 'Active', active_partial: 'Active (partly)',
    no_workspace: 'No Bitbucket Workspace', needs_reauth: 'Needs reconnect', removing: 'Removing',
    removed: 'Removed', failed: 'Failed',
  };
  const BACKUP_STATUS = {
    never: 'never', pending_backup: 'queued', queued: 'queued', running: 'running',
    succeeded: 'succeeded', unchanged: 'succeeded (no change)', failed: 'failed',
  };
  function badge(kind, label) {
    return h('span', { class: 'badge badge-' + kind }, label);
  }
  function statusKind(s) {
    if (['active', 'succeeded', 'unchanged', 'ok', 'webhook_registered'].includes(s)) return 'good';
    if (['failed', 'no_workspace', 'needs_reauth', 'webhook_failed', 'partial'].includes(s)) return 'bad';
    if (['removed', 'never', 'gone', 'cancelled', 'no_admin'].includes(s)) return 'quiet';
    return 'busy';
  }

  // ---- page frame ------------------------------------------------------------------------
  let generation = 0;
  let timers = [];
  function every(ms, fn) {
    const gen = generation;
    const id = setInterval(() => { if (gen === generation) fn(); }, ms);
    timers.push(id);
  }
  function errorBox(e) {
    const msg = e instanceof APIError ? e.message : 'Something went wrong: ' + e.message;
    return h('p', { class: 'error', role: 'alert' }, msg);
  }
  function pageHeader(title, ...extra) {
    return h('div', { class: 'page-header' }, h('h1', { tabindex: '-1' }, title), ...extra);
  }
  function table(headers, rows, caption) {
    return h('div', { class: 'table-wrap' },
      h('table', {},
        caption ? h('caption', { class: 'visually-hidden' }, caption) : null,
        h('thead', {}, h('tr', {}, headers.map((x) => h('th', { scope: 'col' }, x)))),
        h('tbody', {}, rows)));
  }
  function emptyState(message, ...actions) {
    return h('div', { class: 'empty', role: 'status' }, h('p', {}, message), ...actions);
  }
  function confirmDialog(title, message, confirmLabel) {
    return new Promise((resolve) => {
      const dlg = h('dialog', { class: 'confirm', 'aria-labelledby': 'dlg-title' },
        h('h2', { id: 'dlg-title' }, title), h('p', {}, message),
        h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'secondary', onclick: () => dlg.close('cancel') }, 'Cancel'),
          h('button', { type: 'button', class: 'danger', id: 'dlg-confirm', onclick: () => dlg.close('ok') }, confirmLabel)));
      dlg.addEventListener('close', () => { dlg.remove(); resolve(dlg.returnValue === 'ok'); });
      document.body.append(dlg);
      dlg.showModal();
    });
  }
  function busy(button, fn) {
    return async (ev) => {
      if (ev) ev.preventDefault();
      button.disabled = true;
      try { await fn(); } finally { button.disabled = false; }
    };
  }

  // ---- router ----------------------------------------------------------------------------
  const routes = [
    [/^\/$/, home, ''],
    [/^\/repositories\/add-provider$/, addProvider, 'add-provider'],
    [/^\/repositories\/bitbucket$/, repositories, 'bitbucket'],
    [/^\/repositories\/bitbucket\/([0-9a-f-]{36})$/, repositoryPage, 'bitbucket'],
    [/^\/activity$/, activity, 'activity'],
    [/^\/restores$/, restores, 'restores'],
    [/^\/audit-log$/, auditLog, 'audit-log'],
    [/^\/settings\/api-tokens$/, apiTokens, 'api-tokens'],
    [/^\/api-docs$/, apiDocs, 'api-docs'],
  ];
  function navigate(path, replace) {
    if (replace) history.replaceState(null, '', path);
    else history.pushState(null, '', path);
    render(true);
  }
  document.addEventListener('click', (e) => {
    const a = e.target.closest('a');
    if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    if (a.origin !== location.origin || a.target || a.hasAttribute('download') || a.pathname.startsWith('/api/')) return;
    e.preventDefault();
    document.body.classList.remove('menu-open');
    navigate(a.pathname + a.search);
  });
  window.addEventListener('popstate', () => render(true));
  const menu = document.getElementById('menu-toggle');
  menu.addEventListener('click', () => {
    const open = document.body.classList.toggle('menu-open');
    menu.setAttribute('aria-expanded', String(open));
  });

  async function render(focus) {
    generation++;
    timers.forEach(clearInterval);
    timers = [];
    const path = location.pathname;
    let route = null;
    let match = null;
    for (const r of routes) {
      match = path.match(r[0]);
      if (match) { route = r; break; }
    }
    document.querySelectorAll('[data-nav]').forEach((a) => {
      if (route && a.dataset.nav === route[2]) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    });
    const gen = generation;
    const view = h('div', { class: 'view' });
    main.replaceChildren(h('p', { class: 'loading', role: 'status' }, 'Loading…'));
    try {
      if (!route) {
        view.append(pageHeader('Page not found'), emptyState('There is no page at ' + path + '.', h('a', { href: '/' }, 'Go to the dashboard')));
      } else {
        await route[1](view, match, new URLSearchParams(location.search));
      }
    } catch (e) {
      view.append(e.status === 404 ? emptyState(e.message) : errorBox(e));
    }
    if (gen !== generation) return;
    if (!view.querySelector('h1')) view.prepend(pageHeader('Could not show this page'));
    main.replaceChildren(view);
    const title = view.querySelector('h1');
    document.title = (title ? title.textContent + ' · ' : '') + 'GitSec';
    if (focus && title) title.focus();
  }

  // ---- screens ---------------------------------------------------------------------------
  async function home() {
    const { installations } = await api('GET', '/installations');
    navigate(installations.some((i) => i.status !== 'removed') ? '/repositories/bitbucket' : '/repositories/add-provider', true);
  }

  async function addProvider(view, _m, params) {
    const notice = h('div', { 'aria-live': 'polite' });
    if (params.get('connected')) {
      notice.append(h('p', { class: 'notice' }, 'Bitbucket is connected. GitSec is discovering its workspaces and repositories; the table below follows along.'));
    }
    const connectError = h('div', { 'aria-live': 'assertive' });
    const bitbucket = h('button', { type: 'button', class: 'card', id: 'provider-bitbucket' },
      h('span', { class: 'card-title' }, 'Bitbucket'), h('span', { class: 'card-text' }, 'Bitbucket Cloud workspaces and repositories'));
    bitbucket.addEventListener('click', busy(bitbucket, async () => {
      connectError.replaceChildren();
      try {
        const link = await api('POST', '/installations/bitbucket/connect', { return_to: '/repositories/add-provider' });
        location.assign(link.authorize_url);
      } catch (e) {
        connectError.append(errorBox(e));
      }
    }));
    const gitlab = h('button', { type: 'button', class: 'card', disabled: true, 'aria-disabled': 'true' },
      h('span', { class: 'card-title' }, 'GitLab'), h('span', { class: 'card-text' }, 'Coming soon'));
    const tableBox = h('div', {});
    view.append(pageHeader('Add Provider'), notice,
      h('p', {}, 'Connect a Git hosting account. GitSec asks for read-only access; restores use a separate app you install later.'),
      h('div', { class: 'cards' }, bitbucket, gitlab), connectError,
      h('h2', {}, 'Provider Installations'), tableBox);

    async function refresh() {
      const { installations } = await api('GET', '/installations');
      const shown = installations.filter((i) => i.status !== 'removed');
      if (!shown.length) {
        tableBox.replaceChildren(emptyState('No provider installation yet. Click the Bitbucket card above to connect your account.'));
        return false;
      }
      tableBox.replaceChildren(table(['Installation ID', 'Account', 'Status', 'Workspaces', 'Repositories', 'Actions'],
        shown.map((i) => installationRow(i, refresh)), 'Provider installations'));
      return shown.some((i) => ['pending', 'onboarding', 'removing'].includes(i.status));
    }
    if (await refresh()) {
      every(1500, async () => { try { await refresh(); } catch (e) { tableBox.prepend(errorBox(e)); } });
    }
  }

  function installationRow(i, refresh) {
    let progress = null;
    try { progress = typeof i.progress === 'string' ? JSON.parse(i.progress) : i.progress; } catch (_) { /* shown without */ }
    const status = h('td', {}, badge(statusKind(i.status), INSTALLATION_STATUS[i.status] || i.status));
    if (i.status_message) status.append(h('div', { class: 'reason' }, i.status_message));
    if (progress && ['pending', 'onboarding'].includes(i.status)) {
      status.append(h('div', { class: 'progress', role: 'status' },
        'Step: ' + (progress.step || 'starting') + '; workspaces ' + (progress.workspaces_done || 0) + '/' + (progress.workspaces_total || 0) +
        '; repositories found ' + (progress.repositories_found || 0)));
    }
    const workspaces = h('td', {}, (i.workspaces || []).length
      ? h('ul', { class: 'plain' }, i.workspaces.map((w) => h('li', { class: 'workspace' },
        h('strong', {}, w.slug), ' ',
        w.admin ? badge('good', 'admin') : badge('quiet', 'not admin'), ' ',
        w.webhook_registered ? badge('good', 'webhook registered') : badge(statusKind(w.status), w.status.replace(/_/g, ' ')),
        w.status_reason ? h('div', { class: 'reason' }, w.status_reason) : null)))
      : h('span', { class: 'muted' }, i.status === 'no_workspace' ? 'No Bitbucket Workspace' : '—'));
    const repos = i.repositories || {};
    const sync = h('button', { type: 'button', class: 'secondary' }, 'Sync');
    const actionsMsg = h('div', { 'aria-live': 'polite' });
    sync.addEventListener('click', busy(sync, async () => {
      try {
        await api('POST', '/installations/' + i.id + '/sync');
        actionsMsg.replaceChildren(h('span', { class: 'notice' }, 'Sync started.'));
        await refresh();
      } catch (e) { actionsMsg.replaceChildren(errorBox(e)); }
    }));
    const uninstall = h('button', { type: 'button', class: 'danger' }, 'Uninstall');
    uninstall.addEventListener('click', busy(uninstall, async () => {
      const ok = await confirmDialog('Uninstall ' + (i.account_name || 'this installation') + '?',
        'GitSec stops backing up its repositories and removes its webhooks. Existing backups are kept: every snapshot stays in storage and remains restorable.',
        'Uninstall');
      if (!ok) return;
      try {
        await api('DELETE', '/installations/' + i.id);
        await refresh();
      } catch (e) { actionsMsg.replaceChildren(errorBox(e)); }
    }));
    const busyNow = ['removing', 'removed'].includes(i.status);
    return h('tr', { dataset: { installation: i.id, status: i.status } },
      h('td', {}, h('code', {}, i.id)),
      h('td', {}, i.account_name || (i.account && i.account.name) || '—'),
      status, workspaces,
      h('td', {}, String(repos.total || 0) + ' found, ' + (repos.included || 0) + ' included'),
      h('td', { class: 'actions' }, busyNow ? null : [sync, ' ', uninstall], actionsMsg));
  }

  const REPO_PAGE_SIZE = 50;

  async function repositories(view, _m, params) {
    const { installations } = await api('GET', '/installations');
    const live = installations.filter((i) => i.status !== 'removed');
    view.append(pageHeader('Bitbucket repositories'));
    if (!live.length) {
      view.append(emptyState('No Bitbucket account is connected yet.', h('a', { href: '/repositories/add-provider', class: 'button' }, 'Add Provider')));
      return;
    }
    const filters = {
      q: params.get('q') || '', workspace: params.get('workspace') || '', included: params.get('included') || '',
      status: params.get('status') || '', cursor: params.get('cursor') || '',
    };
    const setFilters = (changes) => {
      const next = Object.assign({}, filters, changes);
      if (!('cursor' in changes)) next.cursor = '';
      navigate('/repositories/bitbucket' + q(next), true);
    };
    const workspaces = [...new Set(live.flatMap((i) => (i.workspaces || []).map((w) => w.slug)))].sort();
    const nameInput = h('input', { type: 'search', id: 'filter-name', name: 'q', value: filters.q, placeholder: 'name contains…' });
    const select = (id, label, value, options) => h('label', { for: id }, label,
      h('select', { id, onchange: (e) => setFilters({ [id.replace('filter-', '')]: e.target.value }) },
        options.map(([v, l]) => h('option', { value: v, selected: v === value }, l))));
    const filterForm = h('form', { class: 'filters', role: 'search', onsubmit: (e) => { e.preventDefault(); setFilters({ q: nameInput.value.trim() }); } },
      h('label', { for: 'filter-name' }, 'Name', nameInput),
      select('filter-workspace', 'Workspace', filters.workspace, [['', 'All workspaces'], ...workspaces.map((w) => [w, w])]),
      select('filter-included', 'Included', filters.included, [['', 'All'], ['true', 'Included'], ['false', 'Excluded']]),
      select('filter-status', 'Last backup', filters.status, [['', 'Any status'], ['never', 'Never'], ['queued', 'Queued'], ['succeeded', 'Succeeded'], ['failed', 'Failed']]),
      h('button', { type: 'submit', class: 'secondary' }, 'Filter'));
    const page = await api('GET', '/repositories' + q({ q: filters.q, workspace: filters.workspace, included: filters.included, status: filters.status, cursor: filters.cursor, limit: REPO_PAGE_SIZE }));
    const messages = h('div', { 'aria-live': 'polite' });
    const selected = new Set();
    const rows = page.repositories.map((r) => repositoryRow(r, selected, messages));
    const byInstallation = (names) => {
      const groups = {};
      for (const r of page.repositories) if (names.has(r.id)) (groups[r.installation_id] = groups[r.installation_id] || []).push(r.full_name);
      return groups;
    };
    const bulkSelected = (include) => async () => {
      if (!selected.size) { messages.replaceChildren(h('p', { class: 'notice' }, 'Select repositories first.')); return; }
      try {
        for (const [inst, names] of Object.entries(byInstallation(selected))) {
          await api('POST', '/installations/' + inst + '/repositories:bulk', include ? { include: names } : { exclude: names });
        }
        navigate(location.pathname + location.search, true);
      } catch (e) { messages.replaceChildren(errorBox(e)); }
    };
    const includeSel = h('button', { type: 'button', class: 'secondary', id: 'bulk-include' }, 'Include selected');
    includeSel.addEventListener('click', busy(includeSel, bulkSelected(true)));
    const excludeSel = h('button', { type: 'button', class: 'secondary', id: 'bulk-exclude' }, 'Exclude selected');
    excludeSel.addEventListener('click', busy(excludeSel, bulkSelected(false)));

    const pattern = h('input', { type: 'text', id: 'bulk-pattern', placeholder: 'acme/*-archive', spellcheck: 'false' });
    const instSelect = h('select', { id: 'bulk-installation', 'aria-label': 'Installation' },
      live.map((i) => h('option', { value: i.id }, i.account_name || i.id)));
    const byPattern = (include) => async () => {
      const p = pattern.value.trim();
      if (!p) { messages.replaceChildren(h('p', { class: 'notice' }, 'Type a glob over workspace/slug, for example acme/*-archive.')); return; }
      try {
        const res = await api('POST', '/installations/' + instSelect.value + '/repositories:bulk', include ? { include: [p] } : { exclude: [p] });
        messages.replaceChildren(h('p', { class: 'notice' }, (include
          ? res.matched_include + ' matched, ' + res.changed_to_included + ' now included'
          : res.matched_exclude + ' matched, ' + res.changed_to_excluded + ' now excluded') + '.'));
        setTimeout(() => navigate(location.pathname + location.search, true), 800);
      } catch (e) { messages.replaceChildren(errorBox(e)); }
    };
    const incPat = h('button', { type: 'button', class: 'secondary' }, 'Include matching');
    incPat.addEventListener('click', busy(incPat, byPattern(true)));
    const excPat = h('button', { type: 'button', class: 'secondary' }, 'Exclude matching');
    excPat.addEventListener('click', busy(excPat, byPattern(false)));

    const defaults = h('div', { class: 'defaults' }, live.map((i) => {
      const box = h('input', { type: 'checkbox', id: 'default-' + i.id, checked: !!i.default_included });
      box.addEventListener('change', async () => {
        box.disabled = true;
        try {
          await api('POST', '/installations/' + i.id + '/repositories:bulk', { default_included: box.checked });
          messages.replaceChildren(h('p', { class: 'notice' }, 'New repositories of ' + (i.account_name || i.id) + ' are now ' + (box.checked ? 'included' : 'excluded') + ' by default.'));
        } catch (e) { box.checked = !box.checked; messages.replaceChildren(errorBox(e)); } finally { box.disabled = false; }
      });
      return h('label', { for: box.id, class: 'inline' }, box, ' Include new repositories of ' + (i.account_name || i.id) + ' by default');
    }));

    const all = h('input', { type: 'checkbox', 'aria-label': 'Select all on this page' });
    all.addEventListener('change', () => {
      view.querySelectorAll('input[data-select]').forEach((b) => { b.checked = all.checked; b.dispatchEvent(new Event('change')); });
    });
    const count = page.total != null ? page.total + (page.total === 1 ? ' repository' : ' repositories') : page.repositories.length + ' shown';
    const pager = h('nav', { class: 'pager', 'aria-label': 'Pages' },
      filters.cursor ? h('button', { type: 'button', class: 'secondary', onclick: () => history.back() }, 'Previous page') : null,
      page.next_cursor ? h('button', { type: 'button', class: 'secondary', id: 'next-page', onclick: () => setFilters({ cursor: page.next_cursor }) }, 'Next page') : null);
    view.append(filterForm,
      h('div', { class: 'toolbar' }, h('span', { class: 'count', id: 'repo-count' }, count), includeSel, excludeSel),
      h('div', { class: 'toolbar' },
        h('label', { for: 'bulk-pattern' }, 'Include or exclude by pattern (glob over workspace/slug)', pattern),
        live.length > 1 ? h('label', { for: 'bulk-installation' }, 'Installation', instSelect) : null, incPat, excPat),
      defaults, messages,
      rows.length
        ? table([all, 'Repository', 'Workspace', 'Project', 'Visibility', 'Included', 'Last backup', 'Snapshots', 'Freshness', ''], rows, 'Repositories')
        : emptyState('No repository matches these filters.'),
      pager);
  }

  function backupCell(r) {
    const status = r.last_backup_status || 'never';
    const cell = h('td', { class: 'backup' }, badge(statusKind(status), BACKUP_STATUS[status] || status), ' ', r.last_backup_at ? when(r.last_backup_at) : null);
    if (status === 'failed' && r.last_backup_error) cell.append(h('div', { class: 'reason' }, r.last_backup_error));
    return cell;
  }

  function repositoryRow(r, selected, messages) {
    const pick = h('input', { type: 'checkbox', dataset: { select: r.id }, 'aria-label': 'Select ' + r.full_name });
    pick.addEventListener('change', () => { if (pick.checked) selected.add(r.id); else selected.delete(r.id); });
    const toggle = h('input', { type: 'checkbox', role: 'switch', class: 'switch', checked: r.included, dataset: { include: r.full_name }, 'aria-label': 'Back up ' + r.full_name });
    toggle.addEventListener('change', async () => {
      toggle.disabled = true;
      try {
        await api('PATCH', '/repositories/' + r.id, { included: toggle.checked });
      } catch (e) {
        toggle.checked = !toggle.checked;
        messages.replaceChildren(errorBox(e));
      } finally { toggle.disabled = false; }
    });
    const backupNow = h('button', { type: 'button', class: 'secondary', dataset: { backup: r.full_name }, disabled: !r.included }, 'Back up now');
    const rowMsg = h('div', { 'aria-live': 'polite' });
    backupNow.addEventListener('click', busy(backupNow, async () => {
      try {
        await api('POST', '/repositories/' + r.id + '/backups');
        rowMsg.replaceChildren(h('span', { class: 'notice' }, 'Queued.'));
      } catch (e) { rowMsg.replaceChildren(errorBox(e)); }
    }));
    const project = r.project && (r.project.name || r.project.key);
    const fresh = h('td', {});
    if (r.behind) fresh.append(badge('busy', 'push not yet backed up'), h('div', { class: 'reason' }, 'pushed ', when(r.last_push_at)));
    else if (r.last_push_at) fresh.append(badge('good', 'up to date'), h('div', { class: 'reason' }, 'last push ', when(r.last_push_at)));
    else fresh.append(h('span', { class: 'muted' }, r.last_snapshot_at ? 'no push seen since' : '—'));
    return h('tr', { dataset: { repository: r.full_name } },
      h('td', {}, pick),
      h('td', {}, h('a', { href: '/repositories/bitbucket/' + r.id }, r.full_name.split('/').slice(1).join('/') || r.full_name),
        r.status === 'deleted_upstream' ? h('div', {}, badge('bad', 'deleted upstream')) : null),
      h('td', {}, r.workspace),
      h('td', {}, project || h('span', { class: 'muted' }, '—')),
      h('td', {}, r.is_private ? 'private' : 'public'),
      h('td', {}, toggle),
      backupCell(r),
      h('td', { class: 'num' }, r.snapshot_count != null ? String(r.snapshot_count) : '—', h('div', { class: 'reason' }, r.stored_bytes != null ? fmtBytes(r.stored_bytes) : '')),
      fresh,
      h('td', {}, backupNow, rowMsg));
  }

  async function repositoryPage(view, m) {
    const id = m[1];
    const { repository: r } = await api('GET', '/repositories/' + id);
    const status = h('div', { class: 'live', 'aria-live': 'polite' });
    const backupNow = h('button', { type: 'button', id: 'backup-now', disabled: !r.included }, 'Back up now');
    const snapBox = h('div', {});
    const retentionBox = h('div', { id: 'retention' });
    view.append(pageHeader(r.full_name, backupNow),
      h('dl', { class: 'facts' },
        h('dt', {}, 'Workspace'), h('dd', {}, r.workspace),
        h('dt', {}, 'Project'), h('dd', {}, (r.project && (r.project.name || r.project.key)) || '—'),
        h('dt', {}, 'Visibility'), h('dd', {}, r.is_private ? 'private' : 'public'),
        h('dt', {}, 'Main branch'), h('dd', {}, r.main_branch || '—'),
        h('dt', {}, 'Included'), h('dd', {}, r.included ? 'yes' : 'no (backups paused; snapshots kept)'),
        h('dt', {}, 'Last backup'), h('dd', {}, Array.from(backupCell(r).childNodes)),
        h('dt', {}, 'Last restore drill'), h('dd', {}, r.last_drill ? [badge(statusKind(r.last_drill.status), r.last_drill.status), ' ', when(r.last_drill.finished_at || r.last_drill.started_at), r.last_drill.reason ? ' — ' + r.last_drill.reason : ''] : 'none yet')),
      status, h('h2', {}, 'Retention'), retentionBox, h('h2', {}, 'Snapshots'), snapBox);
    await retentionSection(r, retentionBox);

    let lastSeen = null;
    async function loadSnapshots() {
      const { snapshots } = await api('GET', '/repositories/' + id + '/snapshots?limit=50');
      const newest = snapshots.length ? snapshots[0].id : null;
      if (newest === lastSeen && snapBox.childNodes.length) return;
      lastSeen = newest;
      snapBox.replaceChildren(snapshots.length
        ? table(['Time', 'Trigger', 'Refs', 'Size', 'Uploaded', 'Duration', 'Pull requests', 'Hold', ''], snapshots.map((s) => snapshotRow(r, s)), 'Snapshots')
        : emptyState(r.included ? 'No snapshot yet. The first backup runs shortly after discovery, or click Back up now.' : 'No snapshot yet, and the repository is excluded from backups.'));
    }
    async function loadStatus() {
      const st = await api('GET', '/repositories/' + id + '/backup-status');
      const running = st.state && st.state !== 'idle';
      if (running) status.replaceChildren(h('p', { class: 'notice', id: 'backup-live' }, 'Backup ' + st.state + (st.live && st.live.step ? ': ' + st.live.step : '') + '…'));
      else status.replaceChildren();
      return running;
    }
    backupNow.addEventListener('click', busy(backupNow, async () => {
      try {
        await api('POST', '/repositories/' + id + '/backups');
        status.replaceChildren(h('p', { class: 'notice', id: 'backup-live' }, 'Backup queued…'));
      } catch (e) { status.replaceChildren(errorBox(e)); }
    }));
    await Promise.all([loadSnapshots(), loadStatus()]);
    every(2000, async () => {
      try { await loadStatus(); await loadSnapshots(); } catch (e) { status.replaceChildren(errorBox(e)); }
    });
  }

  const RETENTION_COUNTS = [['keep_last', 'Keep last'], ['keep_daily', 'Daily'], ['keep_weekly', 'Weekly'], ['keep_monthly', 'Monthly'], ['keep_yearly', 'Yearly']];
  const RETENTION_SOURCE = { repository: 'this repository', installation: 'its installation', default: 'GitSec\'s default' };

  // withinText shows a Go duration such as 168h0m0s in days (7d) when it is whole days.
  function withinText(d) {
    const m = /^(\d+)h0m0s$/.exec(d || '');
    return m && Number(m[1]) % 24 === 0 ? Number(m[1]) / 24 + 'd' : (d || '');
  }

  // The repository's retention policy: shown, editable (its own, or inherit), and previewed as
  // the dry run the API computes from storage.
  async function retentionSection(r, box) {
    const base = '/repositories/' + r.id;
    const ret = await api('GET', base + '/retention');
    const p = ret.policy;
    const counts = RETENTION_COUNTS.map(([k, label]) =>
      h('label', { for: 'ret-' + k }, label, h('input', { type: 'number', min: '0', step: '1', id: 'ret-' + k, value: String(p[k]) })));
    const within = h('input', { type: 'text', id: 'ret-keep_within', value: withinText(p.keep_within), placeholder: '7d', spellcheck: 'false' });
    const destructive = h('input', { type: 'checkbox', id: 'ret-keep_before_destructive', checked: !!p.keep_before_destructive });
    const msg = h('div', { id: 'retention-msg', 'aria-live': 'polite' });
    const save = h('button', { type: 'submit', id: 'retention-save' }, 'Save policy');
    const inherit = h('button', { type: 'button', class: 'secondary', id: 'retention-inherit', disabled: ret.source !== 'repository' }, 'Use the installation\'s');
    const preview = h('button', { type: 'button', class: 'secondary', id: 'retention-preview' }, 'Preview');
    const last = ret.last_run;
    const form = h('form', { class: 'inline-form retention-form', id: 'retention-form' },
      h('p', { id: 'retention-source' }, 'Policy of ' + RETENTION_SOURCE[ret.source] + '. The newest snapshot and snapshots under legal hold are always kept.'),
      counts, h('label', { for: 'ret-keep_within' }, 'Keep all within', within),
      h('label', { for: 'ret-keep_before_destructive', class: 'check' }, destructive, ' keep the last snapshot before a deleted or force-pushed reference'),
      h('div', { class: 'actions' }, save, inherit, preview),
      h('p', { class: 'reason', id: 'retention-last-run' }, last
        ? ['Last run ', when(last.at), ': ', last.status, ', ', String(last.forgotten), ' forgotten, ', fmtBytes(last.bytes_freed), ' freed',
          last.objects_locked ? ', ' + last.objects_locked + ' locked' : '', last.reason ? ' — ' + last.reason : '']
        : 'Retention has not run on this repository yet.'),
      msg);
    form.addEventListener('submit', busy(save, async () => {
      const body = { keep_within: within.value.trim(), keep_before_destructive: destructive.checked };
      for (const [k] of RETENTION_COUNTS) body[k] = Number(document.getElementById('ret-' + k).value || 0);
      try {
        await api('PUT', base + '/retention-policy', body);
        await retentionSection(r, box);
        document.getElementById('retention-msg').replaceChildren(h('span', { class: 'notice' }, 'Saved.'));
      } catch (e) { msg.replaceChildren(errorBox(e)); }
    }));
    inherit.addEventListener('click', busy(inherit, async () => {
      try { await api('DELETE', base + '/retention-policy'); await retentionSection(r, box); } catch (e) { msg.replaceChildren(errorBox(e)); }
    }));
    preview.addEventListener('click', busy(preview, async () => {
      try {
        const plan = await api('GET', base + '/retention-plan');
        msg.replaceChildren(h('p', { class: 'notice', id: 'retention-plan' }, 'This policy would forget ' + plan.forget.length + ' of ' +
          plan.decisions.length + ' snapshots and free ' + fmtBytes(plan.bytes_freed) + ' (a preview: nothing was deleted).'));
      } catch (e) { msg.replaceChildren(errorBox(e)); }
    }));
    box.replaceChildren(form);
  }

  function holdCell(s) {
    const cell = h('div', { class: 'hold' });
    const render = (snap) => {
      const held = snap.legal_hold;
      const btn = h('button', { type: 'button', class: 'link', dataset: { hold: snap.id } }, held ? 'Release hold' : 'Legal hold…');
      btn.addEventListener('click', busy(btn, async () => {
        try {
          if (held) {
            if (!await confirmDialog('Release the legal hold?', 'Retention may then forget snapshot ' + snap.id + ' by its policy.', 'Release')) return;
            render((await api('DELETE', '/snapshots/' + encodeURIComponent(snap.id) + '/legal-hold')).snapshot);
          } else {
            const held = await legalHoldDialog(snap);
            if (held) render(held);
          }
        } catch (e) { cell.append(errorBox(e)); }
      }));
      cell.replaceChildren(...(held ? [badge('busy', 'legal hold'), h('div', { class: 'reason' }, held.reason + ' (' + held.by + ')')] : []), btn);
    };
    render(s);
    return cell;
  }

  // legalHoldDialog asks for the hold's reason and sets it; it resolves to the updated snapshot,
  // or null when cancelled.
  function legalHoldDialog(snap) {
    return new Promise((resolve) => {
      const reason = h('input', { type: 'text', id: 'hold-reason', required: true, maxlength: '500', spellcheck: 'false' });
      const errorArea = h('div', { 'aria-live': 'assertive' });
      const dlg = h('dialog', { class: 'confirm', 'aria-labelledby': 'hold-title' });
      let result = null;
      const form = h('form', { method: 'dialog' },
        h('h2', { id: 'hold-title' }, 'Put snapshot under legal hold'),
        h('p', {}, 'Retention never forgets snapshot ' + snap.id + ' while it is held. The reason is kept in the audit log.'),
        h('label', { for: 'hold-reason' }, 'Reason', reason),
        errorArea,
        h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'secondary', onclick: () => dlg.close() }, 'Cancel'),
          h('button', { type: 'submit', id: 'hold-confirm' }, 'Hold')));
      form.addEventListener('submit', async (e) => {
        e.preventDefault();
        try {
          result = (await api('PUT', '/snapshots/' + encodeURIComponent(snap.id) + '/legal-hold', { reason: reason.value.trim() })).snapshot;
          dlg.close();
        } catch (err) { errorArea.replaceChildren(errorBox(err)); }
      });
      dlg.addEventListener('close', () => { dlg.remove(); resolve(result); });
      dlg.append(form);
      document.body.append(dlg);
      dlg.showModal();
    });
  }

  function snapshotRow(repo, s) {
    const restoreMsg = h('div', { 'aria-live': 'polite' });
    const restore = h('button', { type: 'button', class: 'secondary' }, 'Restore…');
    restore.addEventListener('click', () => restoreDialog(repo, s, restoreMsg));
    const prs = s.pull_requests ? (s.pull_requests.records + ' records' + (s.pull_requests.complete ? '' : ' (incomplete)')) : '—';
    return h('tr', { dataset: { snapshot: s.id } },
      h('td', {}, when(s.finished_at), h('div', { class: 'reason' }, h('code', {}, s.id))),
      h('td', {}, s.trigger),
      h('td', { class: 'num' }, String(s.refs)),
      h('td', { class: 'num' }, fmtBytes(s.total_bytes)),
      h('td', { class: 'num' }, fmtBytes(s.bytes_uploaded)),
      h('td', { class: 'num' }, fmtDuration(s.duration_ms)),
      h('td', {}, prs),
      h('td', {}, holdCell(s)),
      h('td', { class: 'actions' },
        h('a', { href: '/api/v1/snapshots/' + encodeURIComponent(s.id) + '/archive?format=bundle', download: '' }, 'Download bundle'), ' ',
        h('a', { href: '/api/v1/snapshots/' + encodeURIComponent(s.id) + '/archive?format=tar', download: '' }, 'tar'), ' ',
        restore, restoreMsg));
  }

  function restoreDialog(repo, s, msg) {
    const slug = h('input', { type: 'text', id: 'restore-slug', required: true, value: repo.full_name.split('/')[1] + '-restored', spellcheck: 'false' });
    const ws = h('input', { type: 'text', id: 'restore-workspace', required: true, value: repo.workspace, spellcheck: 'false' });
    const errorArea = h('div', { 'aria-live': 'assertive' });
    const dlg = h('dialog', { class: 'confirm', 'aria-labelledby': 'restore-title' });
    const form = h('form', { method: 'dialog' },
      h('h2', { id: 'restore-title' }, 'Restore snapshot into a new repository'),
      h('p', {}, 'Pushes every branch and tag of snapshot ' + s.id + ' into a new Bitbucket repository through the Restore App.'),
      h('label', { for: 'restore-workspace' }, 'Workspace', ws),
      h('label', { for: 'restore-slug' }, 'New repository slug', slug),
      errorArea,
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'secondary', onclick: () => dlg.close() }, 'Cancel'),
        h('button', { type: 'submit' }, 'Start restore')));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      try {
        await api('POST', '/restores', { snapshot_id: s.id, target: { mode: 'new', workspace: ws.value.trim(), slug: slug.value.trim() }, options: { restore_metadata: true } });
        dlg.close();
        msg.replaceChildren(h('span', { class: 'notice' }, 'Restore started: '), h('a', { href: '/restores' }, 'follow it on Restores'));
      } catch (err) { errorArea.replaceChildren(errorBox(err)); }
    });
    dlg.append(form);
    dlg.addEventListener('close', () => dlg.remove());
    document.body.append(dlg);
    dlg.showModal();
  }

  async function activity(view, _m, params) {
    const data = await api('GET', '/activity' + q({ limit: 50, cursor: params.get('cursor') || '' }));
    view.append(pageHeader('Activity'));
    const failing = data.failing || [];
    if (failing.length) {
      const more = data.failing_total > failing.length ? ' (' + failing.length + ' of ' + data.failing_total + ')' : '';
      view.append(h('h2', {}, 'Failing backups' + more), table(['Repository', 'Failed', 'Last good backup', 'Reason'], failing.map((f) => h('tr', { class: 'failing' },
        h('td', {}, h('a', { href: '/repositories/bitbucket/' + f.repository_id }, f.full_name)),
        h('td', {}, when(f.failed_at)),
        h('td', {}, when(f.last_backup_at)),
        h('td', { class: 'reason' }, f.error || f.last_backup_error || 'failed'))), 'Failing backups'));
    }
    const recent = data.recent || [];
    const cursor = params.get('cursor') || '';
    view.append(h('h2', {}, 'Recent backups'), recent.length
      ? table(['Finished', 'Repository', 'Trigger', 'Refs', 'Uploaded', 'Duration'], recent.map((s) => h('tr', {},
        h('td', {}, when(s.finished_at)),
        h('td', {}, h('a', { href: '/repositories/bitbucket/' + s.repository_id }, s.full_name)),
        h('td', {}, s.trigger),
        h('td', { class: 'num' }, String(s.refs_count != null ? s.refs_count : s.refs)),
        h('td', { class: 'num' }, fmtBytes(s.bytes_uploaded)),
        h('td', { class: 'num' }, fmtDuration(s.duration_ms)))), 'Recent backups')
      : emptyState(failing.length ? 'No successful backup yet.' : 'No backup has run yet. Connect an account on Add Provider; the first backups start after discovery.',
        h('a', { href: '/repositories/add-provider' }, 'Add Provider')));
    view.append(h('nav', { class: 'pager', 'aria-label': 'Pages' },
      cursor ? h('a', { href: '/activity', class: 'button secondary' }, 'Newest') : null,
      data.next_cursor ? h('a', { href: '/activity' + q({ cursor: data.next_cursor }), class: 'button secondary' }, 'Older') : null));
  }

  async function restores(view) {
    const box = h('div', {});
    view.append(pageHeader('Restores'), h('p', {}, 'Restores into Bitbucket, newest first. Start one from a repository\u2019s snapshot list.'), box);
    async function load() {
      const { restores: list } = await api('GET', '/restores?limit=50');
      box.replaceChildren(list.length
        ? table(['Created', 'Target', 'Snapshot', 'Status', 'Step', 'Message'], list.map((r) => h('tr', {},
          h('td', {}, when(r.created_at)), h('td', {}, r.target), h('td', {}, h('code', {}, r.snapshot_id)),
          h('td', {}, badge(statusKind(r.status), r.status)), h('td', {}, r.step), h('td', { class: 'reason' }, r.message))), 'Restores')
        : emptyState('No restore yet.'));
      return list.some((r) => r.status === 'queued' || r.status === 'running');
    }
    if (await load()) every(2000, () => load().catch((e) => box.prepend(errorBox(e))));
  }

  async function auditLog(view, _m, params) {
    const cursor = params.get('cursor') || '';
    const data = await api('GET', '/audit-events' + q({ limit: 50, cursor }));
    view.append(pageHeader('Audit log'));
    if (!data.audit_events.length) {
      view.append(emptyState('Nothing recorded yet. Connecting an account, changing inclusion, tokens and restores all appear here.'));
      return;
    }
    const rows = [];
    for (const ev of data.audit_events) {
      const detail = h('tr', { class: 'detail', hidden: true }, h('td', { colspan: '5' }, h('pre', {}, JSON.stringify(ev, null, 2))));
      const toggle = h('button', { type: 'button', class: 'link', 'aria-expanded': 'false' }, 'Show JSON');
      toggle.addEventListener('click', () => {
        detail.hidden = !detail.hidden;
        toggle.setAttribute('aria-expanded', String(!detail.hidden));
        toggle.textContent = detail.hidden ? 'Show JSON' : 'Hide JSON';
      });
      rows.push(h('tr', {}, h('td', {}, when(ev.created_at)), h('td', {}, ev.actor), h('td', {}, h('code', {}, ev.action)),
        h('td', {}, ev.target_type ? ev.target_type + ' ' + (ev.target_id || '') : '—'), h('td', {}, toggle)), detail);
    }
    view.append(table(['Time', 'Actor', 'Action', 'Target', 'Event'], rows, 'Audit events'),
      h('nav', { class: 'pager', 'aria-label': 'Pages' },
        cursor ? h('a', { href: '/audit-log', class: 'button secondary' }, 'Newest') : null,
        data.next_cursor ? h('a', { href: '/audit-log' + q({ cursor: data.next_cursor }), class: 'button secondary' }, 'Older') : null));
  }

  async function apiTokens(view) {
    const shown = h('div', { 'aria-live': 'polite' });
    const listBox = h('div', {});
    const name = h('input', { type: 'text', id: 'token-name', maxlength: '100', placeholder: 'ci-backups' });
    const create = h('button', { type: 'submit' }, 'Create token');
    const form = h('form', { class: 'inline-form' }, h('label', { for: 'token-name' }, 'Name', name), create);
    form.addEventListener('submit', busy(create, async () => {
      try {
        const t = await api('POST', '/tokens', { name: name.value.trim() });
        name.value = '';
        const value = h('input', { type: 'text', readonly: true, value: t.token, id: 'new-token', 'aria-label': 'New API token' });
        const copy = h('button', { type: 'button', class: 'secondary' }, 'Copy');
        copy.addEventListener('click', async () => {
          value.select();
          try { await navigator.clipboard.writeText(t.token); copy.textContent = 'Copied'; } catch (_) { copy.textContent = 'Press Ctrl+C'; }
        });
        shown.replaceChildren(h('div', { class: 'notice token-once' },
          h('p', {}, h('strong', {}, 'Copy this token now: it is shown only once.'), ' ' + (t.note || '')), value, ' ', copy));
        await load();
      } catch (e) { shown.replaceChildren(errorBox(e)); }
    }));
    view.append(pageHeader('API tokens'), h('p', {}, 'Tokens let scripts call the API: Authorization: Bearer gsk_…'), form, shown, listBox);
    async function load() {
      const { tokens } = await api('GET', '/tokens');
      listBox.replaceChildren(tokens.length ? table(['Name', 'Prefix', 'Created', 'Last used', ''], tokens.map((t) => {
        const revoke = h('button', { type: 'button', class: 'danger' }, 'Revoke');
        revoke.addEventListener('click', busy(revoke, async () => {
          if (!(await confirmDialog('Revoke ' + t.display_prefix + '?', 'Scripts using this token get 401 at once. This cannot be undone.', 'Revoke'))) return;
          try { await api('DELETE', '/tokens/' + t.id); await load(); } catch (e) { shown.replaceChildren(errorBox(e)); }
        }));
        return h('tr', { dataset: { token: t.display_prefix } }, h('td', {}, t.name || h('span', { class: 'muted' }, 'unnamed')), h('td', {}, h('code', {}, t.display_prefix)),
          h('td', {}, when(t.created_at)), h('td', {}, when(t.last_used_at)), h('td', {}, revoke));
      }), 'API tokens') : emptyState('No active token. Create one above.'));
    }
    await load();
  }

  async function apiDocs(view) {
    const resp = await fetch('/api/v1/openapi.json', { credentials: 'same-origin' });
    if (!resp.ok) throw new APIError(resp.status, 'openapi', 'Could not load the OpenAPI document.');
    const doc = await resp.json();
    const schemas = (doc.components && doc.components.schemas) || {};
    const typeOf = (s, depth) => {
      if (!s) return 'any';
      if (s.$ref) return s.$ref.split('/').pop();
      if (Array.isArray(s.type)) return s.type.join(' | ');
      if (s.type === 'array') return typeOf(s.items, depth) + '[]';
      return s.type || 'object';
    };
    const schemaTable = (s) => {
      if (s && s.$ref) s = schemas[s.$ref.split('/').pop()] || s;
      const props = (s && s.properties) || {};
      const names = Object.keys(props);
      if (!names.length) return h('code', {}, typeOf(s));
      return table(['Field', 'Type', 'Description'], names.map((n) => h('tr', {},
        h('td', {}, h('code', {}, n)), h('td', {}, typeOf(props[n])), h('td', {}, props[n].description || ''))));
    };
    view.append(pageHeader('API reference'),
      h('p', {}, doc.info.title + ' ' + doc.info.version + ' · OpenAPI ' + doc.openapi + ' · ', h('a', { href: '/api/v1/openapi.json' }, 'openapi.json')),
      h('p', {}, (doc.info.description || '')));
    const toc = h('ul', { class: 'toc' });
    const sections = [];
    for (const [path, ops] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        const anchor = (method + path).replace(/[^a-z0-9]+/gi, '-');
        toc.append(h('li', {}, h('a', { href: '#' + anchor, onclick: (e) => { e.preventDefault(); document.getElementById(anchor).scrollIntoView(); } }, h('code', {}, method.toUpperCase() + ' ' + path))));
        const sec = h('section', { class: 'op', id: anchor }, h('h2', {}, h('code', {}, method.toUpperCase() + ' ' + path)), h('p', {}, op.summary || ''));
        if (op.parameters && op.parameters.length) {
          sec.append(h('h3', {}, 'Parameters'), table(['Name', 'In', 'Type', 'Description'], op.parameters.map((p) => h('tr', {},
            h('td', {}, h('code', {}, p.name)), h('td', {}, p.in), h('td', {}, typeOf(p.schema)), h('td', {}, p.description || '')))));
        }
        const body = op.requestBody && op.requestBody.content && op.requestBody.content['application/json'];
        if (body) sec.append(h('h3', {}, 'Request body'), schemaTable(body.schema));
        for (const [code, r] of Object.entries(op.responses || {})) {
          const c = r.content && r.content['application/json'];
          append(sec, [h('h3', {}, 'Response ' + code), h('p', {}, r.description || ''), c ? schemaTable(c.schema) : null]);
        }
        sections.push(sec);
      }
    }
    view.append(h('h2', {}, 'Routes'), toc, ...sections);
  }

  render(false);
})();

// The service worker: shows the Web Push notifications the push bridge
// sends while no tab of the app is open (payload: bridge/push
// WebPushPayload), and opens or focuses the app when one is clicked.
self.addEventListener('push', (ev) => {
  let p = {};
  try { p = ev.data ? ev.data.json() : {}; } catch { p = { title: 'edgechat', body: ev.data ? ev.data.text() : '' }; }
  const title = typeof p.title === 'string' && p.title ? p.title : 'edgechat';
  ev.waitUntil(self.registration.showNotification(title, {
    body: typeof p.body === 'string' ? p.body : '',
    tag: typeof p.tag === 'string' ? p.tag : undefined,
    data: { conversationId: p.conversationId || '', messageId: p.messageId || '' },
  }));
});

self.addEventListener('notificationclick', (ev) => {
  ev.notification.close();
  ev.waitUntil(self.clients.matchAll({ type: 'window', includeUncontrolled: true }).then((list) => {
    for (const c of list) {
      if ('focus' in c) return c.focus();
    }
    return self.clients.openWindow('/');
  }));
});

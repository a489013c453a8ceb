// The service worker: shows the Web Push notifications the push bridge
// sends while no tab of the app is open (payload: bridge/push
// WebPushPayload), and opens the app at the notification's conversation
// when one is clicked.
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

// A click opens the conversation the notification is about
// (conversationId: user:{uid} or group:{gid}): the app's open tab is told
// to show it and focused; without one, a tab opens at it.
self.addEventListener('notificationclick', (ev) => {
  ev.notification.close();
  const d = ev.notification.data || {};
  const conv = typeof d.conversationId === 'string' ? d.conversationId : '';
  ev.waitUntil(self.clients.matchAll({ type: 'window', includeUncontrolled: true }).then((list) => {
    for (const c of list) {
      if ('focus' in c) {
        if (conv) c.postMessage({ type: 'open', conversationId: conv });
        return c.focus();
      }
    }
    return self.clients.openWindow(conv ? `/#open=${encodeURIComponent(conv)}` : '/');
  }));
});

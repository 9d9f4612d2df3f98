// i18n: owns the UI language. Holds the English and Simplified Chinese strings, picks the
// language (stored choice, else navigator.languages), translates static markup through
// data-i18n* attributes, and formats times relative to now. Strings are plain text: callers
// put them into the page with textContent, never as HTML.

const STRINGS = {
  en: {
    "auth.login.title": "Welcome back",
    "auth.register.title": "Create your account",
    "auth.subtitle": "Self-hosted chat for your team",
    "auth.tab.login": "Log in",
    "auth.tab.register": "Create account",
    "auth.name": "Name",
    "auth.password": "Password",
    "auth.submit.login": "Log in",
    "auth.submit.register": "Create account",
    "auth.hint.register": "Names: letters, digits, _ - . (up to 32). Passwords: at least 8 characters.",
    "auth.expired": "Your session has ended. Please log in again.",
    "err.invalid_credentials": "Wrong name or password.",
    "err.account_disabled": "This account is disabled.",
    "err.rate_limited": "Too many attempts. Please wait a moment and try again.",
    "err.registration_closed": "Registration is closed on this server. Ask an admin for an account.",
    "err.name_taken": "That name is already taken.",
    "err.invalid_name": "Names are 1–32 letters, digits, _ - or .",
    "err.invalid_password": "Passwords must be at least 8 characters.",
    "err.network": "Cannot reach the server.",
    "err.generic": "Something went wrong ({code}).",
    "chats.title": "Chats",
    "chats.filter": "Search conversations",
    "chats.empty": "No conversations yet. Start one with the pencil button.",
    "chats.nomatch": "No conversation matches.",
    "chats.new": "New chat",
    "chats.newGroup": "New group",
    "chats.you": "You: {text}",
    "chats.noMessages": "No messages yet",
    "chats.unread_one": "{n} unread message",
    "chats.unread_other": "{n} unread messages",
    "me.language": "Language",
    "me.logout": "Log out",
    "me.logoutOutbox_one": "{n} message has not been sent yet and will be lost. Log out anyway?",
    "me.logoutOutbox_other": "{n} messages have not been sent yet and will be lost. Log out anyway?",
    "chat.pick": "Pick a conversation",
    "chat.pickSub": "Or start a new chat with someone from your team.",
    "chat.back": "Back to conversations",
    "chat.info": "Conversation details",
    "chat.online": "online",
    "chat.offline": "offline",
    "chat.presenceUnknown": "status unknown while disconnected",
    "chat.members_one": "{n} member",
    "chat.members_other": "{n} members",
    "chat.newDirect": "New conversation",
    "chat.typing": "{name} is typing…",
    "chat.typing2": "{a} and {b} are typing…",
    "chat.typingMany": "Several people are typing…",
    "chat.messages": "Messages",
    "chat.jump": "Jump to the newest message",
    "chat.loading": "Loading…",
    "chat.start": "This is the beginning of the conversation.",
    "chat.unread": "Unread messages",
    "chat.today": "Today",
    "chat.yesterday": "Yesterday",
    "chat.input": "Write a message…",
    "chat.inputLabel": "Message",
    "chat.send": "Send",
    "chat.tooLong_one": "This message is too long: {chars} characters, at most {max}. Remove {n} character.",
    "chat.tooLong_other": "This message is too long: {chars} characters, at most {max}. Remove {n} characters.",
    "chat.counterNear_one": "{n} character left",
    "chat.counterNear_other": "{n} characters left",
    "chat.counterOver_one": "{n} character too many (at most {max})",
    "chat.counterOver_other": "{n} characters too many (at most {max})",
    "chat.notSent": "Message not sent: {reason}",
    "chat.removed": "You are no longer a member of “{title}”.",
    "status.sending": "Sending",
    "status.sent": "Sent",
    "status.read": "Read",
    "conn.connecting": "Connecting…",
    "conn.reconnecting": "Connection lost. Reconnecting…",
    "conn.retryIn": "Connection lost. Reconnecting in {n} s…",
    "conn.offline": "You are offline. Messages will be sent when you are back online.",
    "conn.retry": "Retry now",
    "conn.outbox_one": "{n} message waiting",
    "conn.outbox_other": "{n} messages waiting",
    "dir.title": "New chat",
    "dir.search": "Search people",
    "dir.none": "Nobody found.",
    "dir.close": "Close",
    "group.title": "New group",
    "group.addTitle": "Add members",
    "group.name": "Group name",
    "group.namePlaceholder": "e.g. Release crew",
    "group.selected_one": "{n} person selected",
    "group.selected_other": "{n} people selected",
    "group.create": "Create group",
    "group.add": "Add",
    "group.cancel": "Cancel",
    "group.needTitle": "Give the group a name.",
    "info.members": "Members",
    "info.owner": "owner",
    "info.you": "you",
    "info.remove": "Remove {name}",
    "info.add": "Add members",
    "info.leave": "Leave group",
    "info.leaveConfirm": "Leave “{title}”? You will no longer receive its messages.",
    "time.now": "just now",
    "time.min": "{n} min ago",
    "time.hour": "{n} h ago",
    "time.yesterday": "yesterday",
    "notify.enabled": "Desktop notifications enabled.",
    "notify.new": "New message from {name}",
    "notify.title": "Notifications",
    "notify.sound": "Play a sound for new messages while chatd is in the background",
    "notify.badge": "The tab's title and icon show how many messages are unread.",
    "notify.desktop": "Desktop notifications",
    "notify.desktopShow": "Show a desktop notification for new messages",
    "notify.denied": "Blocked in this browser's site settings for this page; allow notifications there first.",
    "notify.insecure": "Not available here: browsers allow desktop notifications only on https pages (or localhost), and this page is plain http ({origin}). The sound and the tab badge above work without https. For desktop notifications, the person who runs chatd can turn on https (for example with chatd --tls-self-signed); then open the https:// address instead.",
    "notify.help": "How to turn on https",
    "notify.test": "Play the sound",
    "notify.done": "Done",
    "error.forbidden": "You are not allowed to do that.",
    "error.not_found": "That conversation no longer exists.",
    "error.user_not_found": "That user no longer exists.",
    "error.empty_text": "the message is empty",
    "error.text_too_long": "the message is longer than the server allows",
    "error.bad_frame": "the request was invalid",
    "error.offline": "You are offline; try again when connected.",
  },
  zh: {
    "auth.login.title": "欢迎回来",
    "auth.register.title": "创建账号",
    "auth.subtitle": "为团队自建的聊天服务",
    "auth.tab.login": "登录",
    "auth.tab.register": "注册",
    "auth.name": "用户名",
    "auth.password": "密码",
    "auth.submit.login": "登录",
    "auth.submit.register": "注册",
    "auth.hint.register": "用户名：字母、数字、_ - .（最多 32 个）。密码：至少 8 个字符。",
    "auth.expired": "登录已过期，请重新登录。",
    "err.invalid_credentials": "用户名或密码错误。",
    "err.account_disabled": "该账号已被停用。",
    "err.rate_limited": "尝试次数过多，请稍后再试。",
    "err.registration_closed": "本服务器已关闭注册，请联系管理员开通账号。",
    "err.name_taken": "该用户名已被占用。",
    "err.invalid_name": "用户名须为 1–32 个字母、数字、_ - 或 .",
    "err.invalid_password": "密码至少需要 8 个字符。",
    "err.network": "无法连接到服务器。",
    "err.generic": "出错了（{code}）。",
    "chats.title": "聊天",
    "chats.filter": "搜索会话",
    "chats.empty": "还没有会话。点击铅笔按钮发起聊天。",
    "chats.nomatch": "没有匹配的会话。",
    "chats.new": "发起聊天",
    "chats.newGroup": "新建群组",
    "chats.you": "我：{text}",
    "chats.noMessages": "暂无消息",
    "chats.unread_other": "{n} 条未读消息",
    "me.language": "语言",
    "me.logout": "退出登录",
    "me.logoutOutbox_other": "还有 {n} 条消息未发送，退出后将丢失。仍要退出吗？",
    "chat.pick": "选择一个会话",
    "chat.pickSub": "或者与团队成员发起新的聊天。",
    "chat.back": "返回会话列表",
    "chat.info": "会话详情",
    "chat.online": "在线",
    "chat.offline": "离线",
    "chat.presenceUnknown": "连接断开，状态未知",
    "chat.members_other": "{n} 位成员",
    "chat.newDirect": "新会话",
    "chat.typing": "{name} 正在输入…",
    "chat.typing2": "{a} 和 {b} 正在输入…",
    "chat.typingMany": "多人正在输入…",
    "chat.messages": "消息",
    "chat.jump": "跳到最新消息",
    "chat.loading": "加载中…",
    "chat.start": "这是会话的开始。",
    "chat.unread": "以下为未读消息",
    "chat.today": "今天",
    "chat.yesterday": "昨天",
    "chat.input": "输入消息…",
    "chat.inputLabel": "消息",
    "chat.send": "发送",
    "chat.tooLong_other": "消息过长：{chars} 个字符，最多 {max} 个。请删去 {n} 个字符。",
    "chat.counterNear_other": "还可输入 {n} 个字符",
    "chat.counterOver_other": "超出 {n} 个字符（最多 {max} 个）",
    "chat.notSent": "消息未发送：{reason}",
    "chat.removed": "你已不再是“{title}”的成员。",
    "status.sending": "发送中",
    "status.sent": "已发送",
    "status.read": "已读",
    "conn.connecting": "正在连接…",
    "conn.reconnecting": "连接已断开，正在重连…",
    "conn.retryIn": "连接已断开，{n} 秒后重连…",
    "conn.offline": "你已离线。恢复联网后将自动发送消息。",
    "conn.retry": "立即重试",
    "conn.outbox_other": "{n} 条消息待发送",
    "dir.title": "发起聊天",
    "dir.search": "搜索成员",
    "dir.none": "没有找到用户。",
    "dir.close": "关闭",
    "group.title": "新建群组",
    "group.addTitle": "添加成员",
    "group.name": "群组名称",
    "group.namePlaceholder": "例如：发布小组",
    "group.selected_other": "已选择 {n} 人",
    "group.create": "创建群组",
    "group.add": "添加",
    "group.cancel": "取消",
    "group.needTitle": "请填写群组名称。",
    "info.members": "成员",
    "info.owner": "群主",
    "info.you": "我",
    "info.remove": "移除 {name}",
    "info.add": "添加成员",
    "info.leave": "退出群组",
    "info.leaveConfirm": "确定退出“{title}”？退出后将不再收到该群消息。",
    "time.now": "刚刚",
    "time.min": "{n} 分钟前",
    "time.hour": "{n} 小时前",
    "time.yesterday": "昨天",
    "notify.enabled": "已开启桌面通知。",
    "notify.new": "{name} 发来新消息",
    "notify.title": "通知",
    "notify.sound": "chatd 在后台时，收到新消息播放提示音",
    "notify.badge": "标签页的标题和图标会显示未读消息数。",
    "notify.desktop": "桌面通知",
    "notify.desktopShow": "收到新消息时显示桌面通知",
    "notify.denied": "此页面的通知已在浏览器的网站设置中被阻止，请先在那里允许。",
    "notify.insecure": "此处不可用：浏览器只允许 https 页面（或 localhost）显示桌面通知，而此页面是普通 http（{origin}）。上面的提示音和标签页角标无需 https 即可使用。如需桌面通知，请让 chatd 的管理员开启 https（例如使用 chatd --tls-self-signed），然后改用 https:// 地址打开。",
    "notify.help": "如何开启 https",
    "notify.test": "试听提示音",
    "notify.done": "完成",
    "error.forbidden": "你没有权限执行此操作。",
    "error.not_found": "该会话已不存在。",
    "error.user_not_found": "该用户已不存在。",
    "error.empty_text": "消息为空",
    "error.text_too_long": "消息超出服务器允许的长度",
    "error.bad_frame": "请求无效",
    "error.offline": "你已离线，请联网后重试。",
  },
};

export const LANGS = { en: "English", zh: "简体中文" };
const LANG_KEY = "chatd.lang";

/** The language in use: "en" or "zh". */
export let lang = pickLang();

function pickLang() {
  const stored = localStorage.getItem(LANG_KEY);
  if (stored && STRINGS[stored]) return stored;
  for (const l of navigator.languages || [navigator.language || "en"]) {
    const base = String(l).toLowerCase();
    if (base.startsWith("zh")) return "zh";
    if (base.startsWith("en")) return "en";
  }
  return "en";
}

/** BCP 47 tag for Intl formatters and the html lang attribute. */
export const locale = () => (lang === "zh" ? "zh-CN" : "en");

/** Switches language, remembers it, and re-translates the static markup. */
export function setLang(l) {
  if (!STRINGS[l]) return;
  lang = l;
  localStorage.setItem(LANG_KEY, l);
  translatePage();
}

/**
 * Translates `key`, filling `{name}` placeholders from `params`. With a numeric `params.n`,
 * `key_one` / `key_other` are tried first (Chinese has only `_other`).
 */
export function t(key, params = {}) {
  const table = STRINGS[lang];
  let s;
  if (typeof params.n === "number") {
    s = (params.n === 1 && table[key + "_one"]) || table[key + "_other"];
  }
  s = s || table[key] || STRINGS.en[key + "_other"] || STRINGS.en[key] || key;
  return s.replace(/\{(\w+)\}/g, (_, k) => (k in params ? String(params[k]) : `{${k}}`));
}

/**
 * Applies translations to elements carrying data-i18n (text), data-i18n-placeholder,
 * data-i18n-label (aria-label) and data-i18n-title (title).
 */
export function translatePage(root = document) {
  document.documentElement.lang = locale();
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
  for (const el of root.querySelectorAll("[data-i18n-label]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nLabel));
  }
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
}

const DAY = 86400000;

function startOfDay(ms) {
  const d = new Date(ms);
  d.setHours(0, 0, 0, 0);
  return d.getTime();
}

/** "just now", "3 min ago", "2 h ago", "yesterday", a weekday, or a date. */
export function relTime(ms, now = Date.now()) {
  const diff = Math.max(0, now - ms);
  if (diff < 45000) return t("time.now");
  if (diff < 3600000) return t("time.min", { n: Math.max(1, Math.round(diff / 60000)) });
  const today = startOfDay(now);
  if (ms >= today) return t("time.hour", { n: Math.round(diff / 3600000) });
  if (ms >= today - DAY) return t("time.yesterday");
  if (ms >= today - 6 * DAY) {
    return new Intl.DateTimeFormat(locale(), { weekday: "short" }).format(ms);
  }
  return new Intl.DateTimeFormat(locale(), { month: "short", day: "numeric" }).format(ms);
}

/** Clock time of a message, e.g. "14:05". */
export function clock(ms) {
  return new Intl.DateTimeFormat(locale(), { hour: "2-digit", minute: "2-digit" }).format(ms);
}

/** Full date and time, for tooltips. */
export function fullTime(ms) {
  return new Intl.DateTimeFormat(locale(), { dateStyle: "medium", timeStyle: "short" }).format(ms);
}

/** Label of a day separator: "Today", "Yesterday" or a date. */
export function dayLabel(ms, now = Date.now()) {
  const d = startOfDay(ms);
  const today = startOfDay(now);
  if (d === today) return t("chat.today");
  if (d === today - DAY) return t("chat.yesterday");
  const opts = { weekday: "long", month: "long", day: "numeric" };
  if (new Date(ms).getFullYear() !== new Date(now).getFullYear()) opts.year = "numeric";
  return new Intl.DateTimeFormat(locale(), opts).format(ms);
}

/** Day key for grouping messages by local calendar day. */
export const dayKey = (ms) => startOfDay(ms);

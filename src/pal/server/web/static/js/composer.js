// The composer: Enter sends, Shift+Enter is a new line; typing @ opens #mention-list
// (ArrowUp/Down move, Enter or Tab pick, Escape closes); the sender name is remembered; a
// "reply" on a message sets the parent until sent or cancelled (Escape, or ×).

import { post } from "./api.js";
import { h, randomId, store } from "./dom.js";

const MAX_CHOICES = 8;
const MENTION_BEFORE_CARET = /(^|\s)@([A-Za-z0-9_-]*)$/;

/**
 * Build the composer. `options`: {room() → room name, topic() → topic id|null,
 * mentionables() → [{key, name, kind, member, mode}], onSent(message)}.
 * Returns {el, setReply(message|null), focus()}.
 */
export function createComposer(options) {
  let reply = null;
  let draftId = randomId();
  let choices = [];
  let active = 0;
  let dismissed = null; // the caret position of an @token closed with Escape
  let sending = false;

  const textarea = h("textarea", {
    id: "composer",
    rows: 1,
    placeholder: "Write a message — @ to mention",
    "aria-label": "Message",
    "aria-autocomplete": "list",
    "aria-controls": "mention-list",
    "aria-expanded": "false",
    autocomplete: "off",
    spellcheck: "true",
  });
  const list = h("ul", { id: "mention-list", role: "listbox", "aria-label": "Mention", hidden: true });
  const replyLabel = h("span", { class: "replying-text" });
  const replyBar = h("div", { class: "replying", hidden: true },
    replyLabel,
    h("button", {
      type: "button",
      class: "icon-btn",
      "aria-label": "Cancel the reply",
      title: "Cancel the reply (Escape)",
      onclick: () => setReply(null),
    }, "×"),
  );
  const sender = h("input", {
    type: "text",
    "data-testid": "sender",
    id: "sender",
    value: store.get("pal.sender", "operator"),
    maxlength: 80,
    autocomplete: "nickname",
    spellcheck: "false",
  });
  const send = h("button", { type: "submit", "data-testid": "send", class: "primary" }, "Send");
  const form = h("form", { class: "composer", "aria-label": "New message" },
    replyBar,
    list,
    h("div", { class: "composer-box" }, textarea, send),
    h("div", { class: "composer-foot" },
      h("label", { class: "sender-field", for: "sender" }, h("span", {}, "as"), sender),
      h("span", { class: "hint" }, "Enter sends · Shift+Enter new line · @ mentions"),
    ),
  );

  sender.addEventListener("input", () => store.set("pal.sender", sender.value.trim()));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    submit();
  });
  textarea.addEventListener("keydown", onKey);
  textarea.addEventListener("input", () => {
    grow();
    updateChoices();
  });
  textarea.addEventListener("click", updateChoices);
  textarea.addEventListener("blur", () => setTimeout(close, 150));

  function onKey(e) {
    if (e.isComposing || e.keyCode === 229) return; // an IME is composing
    if (!list.hidden) {
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        e.preventDefault();
        move(e.key === "ArrowDown" ? 1 : -1);
        return;
      }
      if ((e.key === "Enter" && !e.shiftKey) || e.key === "Tab") {
        e.preventDefault();
        pick(choices[active]);
        return;
      }
      if (e.key === "Escape") {
        e.preventDefault();
        e.stopPropagation();
        dismissed = textarea.selectionStart;
        close();
        return;
      }
    }
    if (e.key === "Enter" && !e.shiftKey && !e.altKey && !e.ctrlKey && !e.metaKey) {
      e.preventDefault();
      submit();
    } else if (e.key === "Escape" && reply) {
      e.preventDefault();
      e.stopPropagation();
      setReply(null);
    }
  }

  async function submit() {
    const content = textarea.value;
    const from = sender.value.trim();
    if (sending || !content.trim()) return;
    if (!from) {
      sender.focus();
      sender.setCustomValidity("Say who is writing");
      sender.reportValidity();
      setTimeout(() => sender.setCustomValidity(""), 3000);
      return;
    }
    const body = { room: options.room(), sender: from, content, client_msg_id: draftId };
    if (reply) body.parent = reply.id;
    else if (options.topic()) body.topic = options.topic();
    sending = true;
    send.disabled = true;
    try {
      const data = await post("/api/messages", body);
      if (textarea.value === content) {
        textarea.value = "";
        grow();
      }
      draftId = randomId();
      setReply(null);
      close();
      options.onSent(data.message);
    } catch {
      // the toast says why; the text stays for another try (same client_msg_id: no double)
    } finally {
      sending = false;
      send.disabled = false;
    }
  }

  function grow() {
    textarea.style.height = "auto";
    const max = Math.max(96, Math.floor(window.innerHeight * 0.4));
    textarea.style.height = `${Math.min(textarea.scrollHeight + 2, max)}px`;
  }

  // -- @-completion ------------------------------------------------------------------------

  function token() {
    const caret = textarea.selectionStart;
    if (caret !== textarea.selectionEnd) return null;
    const match = MENTION_BEFORE_CARET.exec(textarea.value.slice(0, caret));
    if (!match) return null;
    return { query: match[2], start: caret - match[2].length - 1, end: caret };
  }

  function updateChoices() {
    const found = token();
    if (!found || dismissed === found.end) {
      if (!found) dismissed = null;
      close();
      return;
    }
    dismissed = null;
    const query = found.query.toLowerCase();
    const all = options.mentionables();
    const starts = all.filter((m) => m.key.toLowerCase().startsWith(query)
      || (m.name || "").toLowerCase().startsWith(query));
    const contains = query
      ? all.filter((m) => !starts.includes(m) && m.key.toLowerCase().includes(query))
      : [];
    const next = [...starts, ...contains].slice(0, MAX_CHOICES);
    if (!next.length) {
      close();
      return;
    }
    const keep = choices[active]?.key;
    choices = next;
    active = Math.max(0, choices.findIndex((c) => c.key === keep));
    renderChoices();
  }

  function renderChoices() {
    list.replaceChildren(...choices.map((c, i) => h("li", {
      id: `mention-${c.key}`,
      role: "option",
      "aria-selected": String(i === active),
      class: i === active ? "active" : "",
      dataset: { key: c.key },
      onmousedown: (e) => {
        e.preventDefault(); // keep the focus in the textarea
        pick(c);
      },
    },
    h("span", { class: "mention-key" }, `@${c.key}`),
    c.name && c.name !== c.key ? h("span", { class: "mention-name" }, c.name) : null,
    h("span", { class: "mention-kind" }, describe(c)))));
    list.hidden = false;
    textarea.setAttribute("aria-expanded", "true");
    textarea.setAttribute("aria-activedescendant", `mention-${choices[active].key}`);
  }

  function describe(c) {
    if (c.kind !== "agent") return "person";
    if (!c.member) return "agent · not in room";
    return c.mode === "mentions" ? "agent" : `agent · ${c.mode}`;
  }

  function move(step) {
    active = (active + step + choices.length) % choices.length;
    renderChoices();
    list.children[active]?.scrollIntoView({ block: "nearest" });
  }

  function pick(choice) {
    const found = token();
    if (!choice || !found) {
      close();
      return;
    }
    const value = textarea.value;
    const insert = `@${choice.key} `;
    const after = value.slice(found.end).replace(/^ /, "");
    textarea.value = value.slice(0, found.start) + insert + after;
    const caret = found.start + insert.length;
    textarea.setSelectionRange(caret, caret);
    close();
    grow();
    textarea.focus();
  }

  function close() {
    if (list.hidden) return;
    list.hidden = true;
    choices = [];
    active = 0;
    textarea.setAttribute("aria-expanded", "false");
    textarea.removeAttribute("aria-activedescendant");
  }

  // -- replies -----------------------------------------------------------------------------

  function setReply(message) {
    reply = message;
    replyBar.hidden = !message;
    if (message) {
      const text = message.content.replace(/\s+/g, " ").trim();
      replyLabel.replaceChildren(
        "Replying to ",
        h("strong", {}, message.sender),
        `: ${text.length > 80 ? `${text.slice(0, 80)}…` : text}`,
      );
      textarea.focus();
    }
  }

  return {
    el: form,
    setReply,
    focus: () => textarea.focus(),
    /** Another room: clear the reply, show that room's draft. */
    reset(draft = "") {
      setReply(null);
      close();
      textarea.value = draft;
      draftId = randomId();
      grow();
    },
    draft: () => textarea.value,
    /** The mentionables changed (they load after the room): show choices for an @ typed meanwhile. */
    mentionablesChanged() {
      if (document.activeElement === textarea) updateChoices();
    },
  };
}

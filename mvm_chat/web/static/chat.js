// mvm_chat chat page: plain JS, no framework, no build step.
// The key stays in localStorage; each conversation is one WebSocket
// (WS /v1/conversations/{id}/ws?token=KEY) that streams token frames, then a done frame.
"use strict";

(() => {
  const KEY_STORE = "mvm_chat.key";
  const $ = (id) => document.getElementById(id);
  const chat = $("chat");
  const list = $("messages");
  const status = $("status");
  const keyInput = $("api-key");
  const input = $("message");
  const sendButton = $("send");

  let socket = null;
  let opening = null;
  let current = null; // the reply being streamed: {li, text}

  const key = () => localStorage.getItem(KEY_STORE) || "";
  const say = (text, isError = false) => {
    status.textContent = text;
    status.className = isError ? "error" : "muted";
  };

  function bubble(role, text) {
    const li = document.createElement("li");
    li.className = "bubble " + role;
    li.dataset.role = role;
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    li.appendChild(body);
    list.appendChild(li);
    li.scrollIntoView({ block: "end" });
    return { li, text: body };
  }

  function meta(li, fields) {
    const line = document.createElement("span");
    line.className = "meta";
    for (const [name, label] of fields) {
      const span = document.createElement("span");
      span.dataset.field = name;
      span.textContent = label;
      line.appendChild(span);
    }
    li.appendChild(line);
  }

  function finish(frame) {
    const mvm = frame.mvm || {};
    if (!current) current = bubble("assistant", "");
    current.text.classList.remove("streaming");
    if (typeof frame.content === "string") current.text.textContent = frame.content;
    const li = current.li;
    li.dataset.messageId = mvm.message_id || "";
    meta(li, [
      ["model", mvm.model || "?"],
      ["tier", "tier " + (mvm.tier || "?")],
      ["cost_usd", "cost $" + (mvm.cost_usd ?? "?")],
      ["savings_usd", "saved $" + (mvm.savings_usd ?? "?")],
    ]);
    Object.assign(li.dataset, {
      model: mvm.model || "",
      tier: mvm.tier || "",
      cost: mvm.cost_usd || "",
      savings: mvm.savings_usd || "",
      done: "true",
    });
    current = null;
    sendButton.disabled = false;
  }

  function onFrame(event) {
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return;
    }
    switch (frame.type) {
      case "routing":
        if (!current) current = bubble("assistant", "");
        current.text.classList.add("streaming");
        current.li.dataset.routedTo = frame.model || "";
        break;
      case "token":
        if (!current) current = bubble("assistant", "");
        current.text.textContent += frame.text;
        break;
      case "done":
        finish(frame);
        break;
      case "handoff":
        bubble("system", "Handed to a person" + (frame.status ? " (" + frame.status + ")" : "") + ".");
        break;
      case "agent_message":
        bubble("agent", frame.content || "");
        break;
      case "error":
        if (current) current.text.classList.remove("streaming");
        current = null;
        bubble("error", "Error " + frame.code + ": " + frame.detail);
        sendButton.disabled = false;
        if (frame.code === 401) say("The key was refused: paste a valid client key.", true);
        break;
    }
  }

  async function newConversation() {
    const response = await fetch("/v1/conversations", {
      method: "POST",
      headers: { Authorization: "Bearer " + key(), "Content-Type": "application/json" },
      body: "{}",
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.detail || "HTTP " + response.status);
    return body.id;
  }

  function openSocket(conversationId) {
    return new Promise((resolve, reject) => {
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      const url = scheme + "//" + location.host + "/v1/conversations/" +
        encodeURIComponent(conversationId) + "/ws?token=" + encodeURIComponent(key());
      const ws = new WebSocket(url);
      ws.onopen = () => resolve(ws);
      ws.onerror = () => reject(new Error("the WebSocket did not open"));
      ws.onmessage = onFrame;
      ws.onclose = () => {
        if (socket === ws) socket = null;
        if (current) {
          current.text.classList.remove("streaming");
          current = null;
        }
        sendButton.disabled = false;
      };
    });
  }

  // The open socket, after starting a conversation if there is none yet.
  async function ready() {
    if (socket && socket.readyState === WebSocket.OPEN) return socket;
    if (!opening) {
      opening = (async () => {
        let id = chat.dataset.conversationId;
        if (!id) {
          id = await newConversation();
          chat.dataset.conversationId = id;
        }
        socket = await openSocket(id);
        say("Conversation " + id + ".");
        return socket;
      })().finally(() => {
        opening = null;
      });
    }
    return opening;
  }

  function reset() {
    if (socket) socket.close();
    socket = null;
    current = null;
    chat.dataset.conversationId = "";
    list.replaceChildren();
  }

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = keyInput.value.trim();
    if (!value) return say("Paste a client API key first.", true);
    localStorage.setItem(KEY_STORE, value);
    reset();
    say("Key saved in this browser. Send a message to start.");
  });

  $("forget-key").addEventListener("click", () => {
    localStorage.removeItem(KEY_STORE);
    keyInput.value = "";
    reset();
    say("Key removed from this browser.");
  });

  $("new-conversation").addEventListener("click", () => {
    reset();
    say("A new conversation starts with your next message.");
  });

  $("send-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const content = input.value.trim();
    if (!content) return;
    if (!key()) return say("Paste a client API key first.", true);
    sendButton.disabled = true;
    try {
      const ws = await ready();
      bubble("user", content);
      input.value = "";
      ws.send(JSON.stringify({ type: "message", content }));
    } catch (error) {
      say("Could not start the conversation: " + error.message, true);
      sendButton.disabled = false;
    }
  });

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("send-form").requestSubmit();
    }
  });

  if (key()) {
    keyInput.value = key();
    say("Using the key saved in this browser. Send a message to start.");
  }
})();

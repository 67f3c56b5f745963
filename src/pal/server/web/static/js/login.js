// The sign-in form: POST the admin token to /api/workbench/login, which sets the session
// cookie (HttpOnly, so this script never sees it), then load the workbench.

const form = document.getElementById("login");
const error = document.getElementById("login-error");

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.hidden = true;
  const button = form.querySelector("button");
  button.disabled = true;
  try {
    const response = await fetch("/api/workbench/login", {
      method: "POST",
      headers: { Accept: "application/json", "Content-Type": "application/json" },
      body: JSON.stringify({ token: form.token.value.trim() }),
      cache: "no-store",
    });
    if (response.ok) {
      location.reload();
      return;
    }
    let message = `sign-in failed: HTTP ${response.status}`;
    try {
      const data = await response.json();
      if (typeof data.error === "string") message = data.error;
    } catch {
      // not JSON: keep the status line
    }
    error.textContent = message;
  } catch (err) {
    error.textContent = `cannot reach the server (${err.message}); is it running?`;
  }
  error.hidden = false;
  button.disabled = false;
  form.token.select();
});

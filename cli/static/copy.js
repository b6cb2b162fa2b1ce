// The API Keys page's only script: the copy button next to a key shown once.
document.addEventListener("DOMContentLoaded", () => {
  const button = document.getElementById("copy");
  const secret = document.getElementById("secret");
  if (!button || !secret) return;
  button.hidden = false;
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(secret.textContent);
      button.textContent = "Copied";
    } catch {
      window.getSelection().selectAllChildren(secret);
      button.textContent = "Press Ctrl+C to copy";
    }
  });
});

// static-registry's page: instant filtering of the listed rows and copy buttons. Everything also
// works without this script (the search form submits; commands are selectable text).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Filter the rows of the table an input names (data-filter) as the user types.
  for (const input of document.querySelectorAll("input[data-filter]")) {
    const table = document.querySelector(input.dataset.filter);
    if (!table) continue;
    const count = document.getElementById("count");
    const initial = count ? count.textContent : "";
    input.addEventListener("input", () => {
      const q = input.value.trim().toLowerCase();
      let shown = 0;
      for (const row of table.tBodies[0].rows) {
        row.hidden = q !== "" && !(row.dataset.name || "").includes(q);
        if (!row.hidden) shown++;
      }
      // The count is a live region: screen readers hear how many rows remain.
      if (count) count.textContent = q === "" ? initial : `${shown} shown on this page (press Enter to search all)`;
    });
  }
  // Copy the command a button carries; say so on the button and to screen readers.
  for (const button of document.querySelectorAll("button.copy")) {
    button.hidden = false;
    button.addEventListener("click", async () => {
      const text = button.dataset.copy;
      let ok = false;
      try {
        await navigator.clipboard.writeText(text);
        ok = true;
      } catch (_) {
        // No clipboard API (plain HTTP): copy through a selected, off-screen text area.
        const area = document.createElement("textarea");
        area.value = text;
        area.setAttribute("readonly", "");
        area.style.position = "absolute";
        area.style.left = "-9999px";
        document.body.appendChild(area);
        area.select();
        ok = document.execCommand("copy");
        area.remove();
      }
      button.textContent = ok ? "Copied" : "Select and copy";
      button.classList.toggle("copied", ok);
      setTimeout(() => { button.textContent = "Copy"; button.classList.remove("copied"); }, 2000);
    });
  }
});

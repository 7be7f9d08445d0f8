// Follows Airflow's colour mode (light or dark), loaded in <head> so the page never flashes.
// Airflow 3's UI (next-themes, storage key "theme") puts class "light" or "dark" on its <html>
// and stores the user's choice in localStorage["theme"] ("light", "dark" or "system"). Inside
// Airflow's frame (same origin) the parent's class is read, and watched, so toggling the theme
// in Airflow repaints these pages at once; on their own the stored choice applies, then the
// system's. ?theme=light|dark forces one.
(function () {
  var root = document.documentElement;
  var forced = new URLSearchParams(window.location.search).get("theme");
  function parentMode() {
    try {
      if (window.parent === window) return null;
      var cls = window.parent.document.documentElement.classList;
      if (cls.contains("dark")) return "dark";
      if (cls.contains("light")) return "light";
    } catch (error) {
      // Another origin: fall through to the stored choice.
    }
    return null;
  }
  function storedMode() {
    try {
      var value = window.localStorage.getItem("theme");
      if (value === "dark" || value === "light") return value;
    } catch (error) {
      // Storage blocked.
    }
    return null;
  }
  function systemMode() {
    return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches
      ? "dark"
      : "light";
  }
  function apply() {
    var mode = forced === "dark" || forced === "light"
      ? forced
      : parentMode() || storedMode() || systemMode();
    root.setAttribute("data-theme", mode);
  }
  apply();
  try {
    if (window.parent !== window) {
      new MutationObserver(apply).observe(window.parent.document.documentElement, {
        attributes: true,
        attributeFilter: ["class"],
      });
    }
  } catch (error) {
    // Another origin: no live updates.
  }
  window.addEventListener("storage", function (event) {
    if (event.key === "theme") apply();
  });
  if (window.matchMedia) {
    window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", apply);
  }
})();

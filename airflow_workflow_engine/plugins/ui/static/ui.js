// Links to Airflow's own pages (data-airflow) open in Airflow's page, not inside the frame
// Airflow's UI shows these pages in. The frame may not navigate the top window, but it is
// same-origin: push the URL into the top window's history and let Airflow's router follow.
document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-airflow]");
  if (!link || window.top === window.self || event.ctrlKey || event.metaKey) return;
  try {
    if (window.top.location.origin !== window.location.origin) return;
    event.preventDefault();
    window.top.history.pushState(null, "", link.href);
    window.top.dispatchEvent(new PopStateEvent("popstate"));
  } catch (error) {
    // Not allowed to reach the top window: the browser follows the link in the frame.
  }
});

// Times in the viewer's own zone; the UTC time stays in the title, shown on hover.
document.querySelectorAll("time[data-ms]").forEach((node) => {
  const moment = new Date(Number(node.dataset.ms));
  node.textContent = moment.toLocaleString(undefined, {
    dateStyle: "medium",
    timeStyle: "medium",
  });
});

// Disables both photos once one is clicked, so a double click sends one answer.
'use strict';
(function () {
  var form = document.getElementById('pair-form');
  if (!form) return;
  var buttons = form.querySelectorAll('button.choice');
  form.addEventListener('submit', function () {
    // Deferred: a disabled button would drop its name=value from this submission.
    setTimeout(function () {
      buttons.forEach(function (b) { b.disabled = true; });
    }, 0);
  });
  // Coming back through the browser history must not leave the buttons dead.
  window.addEventListener('pageshow', function () {
    buttons.forEach(function (b) { b.disabled = false; });
  });
})();

/*
 * The hosted card field: runs inside the vault's own origin, in an iframe on the merchant's
 * page. The card number, expiry and CVC typed here never leave this frame except in one
 * request to this origin's /v1/payment_methods (the page's CSP allows no other), and the
 * parent page only ever hears {complete, empty, brand, error} and the payment method the
 * vault answered (last four digits at most).
 *
 * The parent is the origin named in the `origin` query parameter: messages from any other
 * origin are ignored, and every message to the parent is pinned to it.
 */
(function () {
  'use strict';

  var query = new URLSearchParams(window.location.search);
  var publishableKey = query.get('key') || '';
  var parentOrigin = query.get('origin') || '';
  // Relative to this page, so it works under an API Gateway stage prefix too.
  var ENDPOINT = 'v1/payment_methods';

  var row = document.getElementById('card-row');
  var numberInput = document.getElementById('cardnumber');
  var expiryInput = document.getElementById('exp-date');
  var cvcInput = document.getElementById('cvc');
  var brandBadge = document.getElementById('brand');
  var errorBox = document.getElementById('card-error');
  var touched = { number: false, expiry: false, cvc: false };
  var lastAnnounced = '';

  var BRANDS = [
    ['amex', [['34', '34'], ['37', '37']]],
    ['diners', [['36', '36'], ['38', '38'], ['300', '305']]],
    ['jcb', [['3528', '3589']]],
    ['visa', [['4', '4']]],
    ['mastercard', [['51', '55'], ['2221', '2720']]],
    ['discover', [['6011', '6011'], ['65', '65'], ['644', '649']]],
    ['unionpay', [['62', '62']]]
  ];
  var LENGTHS = {
    amex: [15],
    diners: [14, 16],
    visa: [13, 16, 19],
    mastercard: [16],
    discover: [16, 19],
    jcb: [16, 17, 18, 19],
    unionpay: [16, 17, 18, 19],
    unknown: [12, 13, 14, 15, 16, 17, 18, 19]
  };
  var BRAND_LABELS = {
    amex: 'Amex', diners: 'Diners', jcb: 'JCB', visa: 'Visa', mastercard: 'MC',
    discover: 'Disc', unionpay: 'UP', unknown: ''
  };

  function digitsOf(text) {
    return String(text || '').replace(/\D/g, '');
  }

  function brandOf(digits) {
    for (var i = 0; i < BRANDS.length; i++) {
      var ranges = BRANDS[i][1];
      for (var j = 0; j < ranges.length; j++) {
        var low = ranges[j][0];
        var high = ranges[j][1];
        var head = digits.slice(0, low.length);
        if (head.length === low.length && head >= low && head <= high) {
          return BRANDS[i][0];
        }
      }
    }
    return 'unknown';
  }

  function luhnValid(digits) {
    var total = 0;
    for (var i = 0; i < digits.length; i++) {
      var d = Number(digits.charAt(digits.length - 1 - i));
      if (i % 2 === 1) {
        d *= 2;
        if (d > 9) d -= 9;
      }
      total += d;
    }
    return total % 10 === 0;
  }

  function maxLength(brand) {
    var lengths = LENGTHS[brand];
    return lengths[lengths.length - 1];
  }

  function cvcLength(brand) {
    return brand === 'amex' ? 4 : 3;
  }

  function formatNumber(digits, brand) {
    var groups = brand === 'amex' ? [4, 6, 5] : brand === 'diners' && digits.length === 14
      ? [4, 6, 4] : [4, 4, 4, 4, 3];
    var parts = [];
    var at = 0;
    for (var i = 0; i < groups.length && at < digits.length; i++) {
      parts.push(digits.slice(at, at + groups[i]));
      at += groups[i];
    }
    return parts.join(' ');
  }

  function formatExpiry(raw) {
    var digits = digitsOf(raw);
    if (digits.length === 1 && Number(digits) > 1) digits = '0' + digits;
    if (digits.length <= 2) return digits;
    return digits.slice(0, 2) + ' / ' + digits.slice(2, 4);
  }

  function fieldError(code, message, param) {
    return { type: 'validation_error', code: code, message: message, param: param };
  }

  // The card as typed, its brand, and the first thing wrong with it (shown only for
  // fields the customer has left or filled in, unless `strict`).
  function read(strict) {
    var number = digitsOf(numberInput.value);
    var brand = brandOf(number);
    var expiryDigits = digitsOf(expiryInput.value);
    var cvc = digitsOf(cvcInput.value);
    var now = new Date();
    var month = Number(expiryDigits.slice(0, 2));
    var year = 2000 + Number(expiryDigits.slice(2, 4));
    var errors = [];

    var numberComplete = LENGTHS[brand].indexOf(number.length) !== -1 && luhnValid(number);
    if (!numberComplete && (strict || touched.number || number.length >= maxLength(brand))) {
      if (!number) {
        errors.push(fieldError('incomplete_number', 'Your card number is incomplete.',
          'card[number]'));
      } else if (number.length < LENGTHS[brand][0] ||
          (number.length < maxLength(brand) && !strict && !touched.number)) {
        errors.push(fieldError('incomplete_number', 'Your card number is incomplete.',
          'card[number]'));
      } else {
        errors.push(fieldError('invalid_number', 'Your card number is invalid.', 'card[number]'));
      }
    }

    var expiryComplete = false;
    if (expiryDigits.length === 4) {
      if (month < 1 || month > 12) {
        errors.push(fieldError('invalid_expiry_month', "Your card's expiration month is invalid.",
          'card[exp_month]'));
      } else if (year < now.getFullYear()) {
        errors.push(fieldError('invalid_expiry_year_past',
          "Your card's expiration year is in the past.", 'card[exp_year]'));
      } else if (year === now.getFullYear() && month < now.getMonth() + 1) {
        errors.push(fieldError('invalid_expiry_month_past',
          "Your card's expiration date is in the past.", 'card[exp_month]'));
      } else if (year > now.getFullYear() + 50) {
        errors.push(fieldError('invalid_expiry_year', "Your card's expiration year is invalid.",
          'card[exp_year]'));
      } else {
        expiryComplete = true;
      }
    } else if (strict || touched.expiry) {
      errors.push(fieldError('incomplete_expiry', "Your card's expiration date is incomplete.",
        'card[exp_month]'));
    }

    var cvcComplete = cvc.length === cvcLength(brand);
    if (!cvcComplete && (strict || touched.cvc || cvc.length > cvcLength(brand))) {
      errors.push(fieldError('incomplete_cvc', "Your card's security code is incomplete.",
        'card[cvc]'));
    }

    return {
      number: number,
      brand: brand,
      expMonth: month,
      expYear: year,
      cvc: cvc,
      empty: !number && !expiryDigits && !cvc,
      complete: numberComplete && expiryComplete && cvcComplete,
      error: errors[0]
    };
  }

  function toParent(message) {
    // Pinned: a page of any other origin that framed this field hears nothing.
    window.parent.postMessage(message, parentOrigin);
  }

  function render(state) {
    brandBadge.textContent = BRAND_LABELS[state.brand] || '';
    errorBox.textContent = state.error ? state.error.message : '';
    row.classList.toggle('invalid', Boolean(state.error));
    var param = state.error && state.error.param;
    numberInput.classList.toggle('invalid', param === 'card[number]');
    expiryInput.classList.toggle('invalid', param === 'card[exp_month]' ||
      param === 'card[exp_year]');
    cvcInput.classList.toggle('invalid', param === 'card[cvc]');
  }

  function announce(state) {
    var change = {
      type: 'clearline:change',
      elementType: 'card',
      complete: state.complete,
      empty: state.empty,
      brand: state.brand,
      error: state.error
        ? { type: state.error.type, code: state.error.code, message: state.error.message }
        : undefined
    };
    var summary = JSON.stringify(change);
    if (summary !== lastAnnounced) {
      lastAnnounced = summary;
      toParent(change);
    }
  }

  function refresh() {
    var state = read(false);
    render(state);
    announce(state);
    return state;
  }

  numberInput.addEventListener('input', function () {
    var digits = digitsOf(numberInput.value);
    var brand = brandOf(digits);
    digits = digits.slice(0, maxLength(brand));
    var atEnd = numberInput.selectionStart === numberInput.value.length;
    numberInput.value = formatNumber(digits, brand);
    if (atEnd) numberInput.setSelectionRange(numberInput.value.length, numberInput.value.length);
    cvcInput.maxLength = cvcLength(brand);
    var state = refresh();
    if (atEnd && digits.length === maxLength(brand) && !state.error) expiryInput.focus();
  });
  expiryInput.addEventListener('input', function () {
    var typed = expiryInput.value;
    // Deleting the separator deletes the digit before it.
    if (/\s\/\s?$/.test(typed) && typed.length < 5) typed = typed.slice(0, 1);
    expiryInput.value = formatExpiry(typed);
    var state = refresh();
    if (digitsOf(expiryInput.value).length === 4 && !state.error) cvcInput.focus();
  });
  cvcInput.addEventListener('input', function () {
    cvcInput.value = digitsOf(cvcInput.value).slice(0, 4);
    refresh();
  });
  [['number', numberInput], ['expiry', expiryInput], ['cvc', cvcInput]].forEach(function (pair) {
    pair[1].addEventListener('blur', function () {
      if (pair[1].value) touched[pair[0]] = true;
      refresh();
    });
    pair[1].addEventListener('focus', function () {
      toParent({ type: 'clearline:focus' });
    });
  });
  document.getElementById('card-form').addEventListener('submit', function (event) {
    event.preventDefault(); // the parent decides when the card is sent
  });

  // billing_details[address][line1]=... as Stripe's form encoding spells nested hashes.
  function appendForm(form, prefix, value) {
    if (value === null || value === undefined) return;
    if (typeof value === 'object') {
      Object.keys(value).forEach(function (name) {
        appendForm(form, prefix + '[' + name + ']', value[name]);
      });
    } else {
      form.append(prefix, String(value));
    }
  }

  function reply(requestId, payload) {
    payload.type = 'clearline:result';
    payload.id = requestId;
    toParent(payload);
  }

  function createPaymentMethod(request) {
    touched = { number: true, expiry: true, cvc: true };
    var state = read(true);
    render(state);
    if (!state.complete) {
      reply(request.id, { error: state.error ? {
        type: 'validation_error', code: state.error.code, message: state.error.message
      } : { type: 'validation_error', message: 'Your card details are incomplete.' } });
      return;
    }
    var form = new URLSearchParams();
    form.append('key', publishableKey);
    form.append('type', 'card');
    form.append('card[number]', state.number);
    form.append('card[exp_month]', String(state.expMonth));
    form.append('card[exp_year]', String(state.expYear));
    if (state.cvc) form.append('card[cvc]', state.cvc);
    appendForm(form, 'billing_details', request.billing_details);
    appendForm(form, 'metadata', request.metadata);
    fetch(ENDPOINT, {
      method: 'POST',
      body: form,
      credentials: 'omit',
      cache: 'no-store',
      referrerPolicy: 'no-referrer'
    }).then(function (response) {
      return response.json().then(function (body) {
        if (response.ok) {
          reply(request.id, { paymentMethod: body });
        } else {
          reply(request.id, { error: (body && body.error) || {
            type: 'api_error', message: 'The card could not be saved.'
          } });
        }
      });
    }).catch(function () {
      reply(request.id, { error: {
        type: 'api_connection_error',
        message: 'The card could not be sent: check your connection and try again.'
      } });
    });
  }

  function clear() {
    numberInput.value = '';
    expiryInput.value = '';
    cvcInput.value = '';
    touched = { number: false, expiry: false, cvc: false };
    refresh();
  }

  window.addEventListener('message', function (event) {
    if (event.source !== window.parent || event.origin !== parentOrigin) return;
    var data = event.data;
    if (!data || typeof data !== 'object') return;
    if (data.type === 'clearline:createPaymentMethod') {
      createPaymentMethod(data);
    } else if (data.type === 'clearline:focus') {
      numberInput.focus();
    } else if (data.type === 'clearline:clear') {
      clear();
    }
  });

  toParent({ type: 'clearline:ready' });
})();
